//! Resource names.
//!
//! A resource name becomes part of Swarm service, secret, config, network and
//! DNS names, so it must be a DNS-1123 label *after* haswarm appends its
//! suffixes. The type can only hold a valid name: parsing is the only way in.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest name accepted. Swarm and DNS labels stop at 63 characters and
/// haswarm appends up to 22 (`-replication-0123abcd`, `-sentinel-6`), so
/// the user-chosen part keeps the rest.
pub const MAX_NAME_LEN: usize = 40;

/// The rule, spelt once, used in messages and in the JSON Schema description.
pub const NAME_RULE: &str = "a DNS-1123 label: lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, at most 40 characters";

/// A validated resource name (DNS-1123 label, at most [`MAX_NAME_LEN`] characters).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {value:?}: {problem}; a name must be {NAME_RULE}")]
pub struct NameError {
    /// The rejected text.
    pub value: String,
    /// What exactly is wrong.
    pub problem: String,
}

impl Name {
    /// Parses a name, explaining the first problem found.
    ///
    /// # Errors
    /// [`NameError`] when `value` is not a DNS-1123 label of at most 40 characters.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let err = |problem: String| NameError {
            value: value.to_owned(),
            problem,
        };
        if value.is_empty() {
            return Err(err("it is empty".into()));
        }
        if value.len() > MAX_NAME_LEN {
            return Err(err(format!("it has {} characters", value.len())));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(err(format!("it contains {c:?}")));
        }
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(err("it does not start with a lowercase letter".into()));
        }
        if value.ends_with('-') {
            return Err(err("it ends with '-'".into()));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Name> for String {
    fn from(value: Name) -> Self {
        value.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl JsonSchema for Name {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": format!("Resource name: {NAME_RULE}."),
            "minLength": 1,
            "maxLength": MAX_NAME_LEN,
            "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "dify", "pg-main", "r2", "a-b-c-1"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_with_the_reason() {
        let cases = [
            ("", "it is empty"),
            ("Dify", "contains 'D'"),
            ("pg_main", "contains '_'"),
            ("1pg", "does not start with a lowercase letter"),
            ("-pg", "does not start"),
            ("pg-", "ends with '-'"),
            ("pg.main", "contains '.'"),
        ];
        for (bad, why) in cases {
            let e = Name::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("DNS-1123"), "{e}");
        }
        let long = "a".repeat(41);
        assert!(Name::parse(&long)
            .expect_err("too long")
            .to_string()
            .contains("41 characters"));
        assert!(Name::parse(&"a".repeat(40)).is_ok());
    }
}
