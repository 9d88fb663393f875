//! Label selectors, as `kubectl get -l` takes them: `app=dify`, `tier!=cache`,
//! `app` (key present), `!app` (key absent), comma-separated, all must match.

use std::collections::BTreeMap;

/// One requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {problem}; write e.g. app=dify,tier!=cache")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub problem: String,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

impl Selector {
    /// Parses `a=b,c!=d,e,!f` (`==` is accepted for `=`).
    ///
    /// # Errors
    /// [`SelectorError`] naming the first bad requirement.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let err = |problem: String| SelectorError {
            selector: selector.to_owned(),
            problem,
        };
        let mut reqs = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let (key, value) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            if !valid_part(key) {
                return Err(err(format!("{part:?} has no valid label key")));
            }
            if value.is_some_and(|v| !v.is_empty() && !valid_part(v)) {
                return Err(err(format!("{part:?} has an invalid value")));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubectl() {
        let l = labels(&[("app", "dify"), ("tier", "data")]);
        for (sel, want) in [
            ("", true),
            ("app=dify", true),
            ("app==dify", true),
            ("app=other", false),
            ("app!=other", true),
            ("tier!=data", false),
            ("app,tier", true),
            ("!app", false),
            ("!missing", true),
            ("app=dify,tier=data", true),
            ("app=dify,tier=cache", false),
        ] {
            assert_eq!(
                Selector::parse(sel).map(|s| s.matches(&l)),
                Ok(want),
                "{sel}"
            );
        }
    }

    #[test]
    fn bad_selectors_say_why() {
        for bad in ["=x", "a b=c", "a=b c", "!"] {
            let e = Selector::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("invalid label selector"), "{e}");
        }
    }
}
