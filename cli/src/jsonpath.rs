//! The part of kubectl's JSONPath templates that scripts use: text with
//! `{...}` expressions made of `.field`, `[n]`, `[*]` and
//! `[?(@.field=="value")]` steps. Several results are joined by spaces.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter { path: Vec<String>, value: String },
}

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Expr(Vec<Step>),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template(Vec<Piece>);

fn parse_expr(expr: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut rest = expr.trim();
    if rest.is_empty() || rest == "." || rest == "@" {
        return Ok(steps);
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() {
                return Err(format!("empty field name in {expr:?}"));
            }
            steps.push(Step::Field(name.to_owned()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("unclosed '[' in {expr:?}"))?;
            let inner = &r[..end];
            rest = &r[end + 1..];
            if inner == "*" {
                steps.push(Step::All);
            } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let (path, value) = f.split_once("==").ok_or_else(|| {
                    format!("filter {inner:?} needs ==, e.g. [?(@.type==\"Ready\")]")
                })?;
                let value = value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_owned();
                let path = path.trim().split('.').map(str::to_owned).collect();
                steps.push(Step::Filter { path, value });
            } else {
                let n = inner
                    .parse()
                    .map_err(|_| format!("{inner:?} is not an index, * or a filter"))?;
                steps.push(Step::Index(n));
            }
        } else {
            return Err(format!("expected '.' or '[' in {expr:?} at {rest:?}"));
        }
    }
    Ok(steps)
}

impl Template {
    /// Parses a template such as `{.metadata.name}` or `name={.metadata.name}`.
    ///
    /// # Errors
    /// A message saying what is malformed.
    pub fn parse(t: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
            pieces.push(Piece::Expr(parse_expr(&rest[start + 1..start + end])?));
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self(pieces))
    }

    /// Evaluates the template against `input`.
    pub fn render(&self, input: &Value) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(&t.replace("\\n", "\n").replace("\\t", "\t")),
                Piece::Expr(steps) => {
                    let found = eval(steps, input);
                    let texts: Vec<String> = found
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    out.push_str(&texts.join(" "));
                }
            }
        }
        out
    }
}

fn eval<'a>(steps: &[Step], input: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![input];
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(o) => next.extend(o.values()),
                    _ => {}
                },
                Step::Filter { path, value } => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|item| {
                            let mut x = Some(*item);
                            for p in path {
                                x = x.and_then(|x| x.get(p));
                            }
                            match x {
                                Some(Value::String(s)) => s == value,
                                Some(other) => &other.to_string() == value,
                                None => false,
                            }
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_select_like_kubectl() {
        let v = serde_json::json!({
            "metadata": {"name": "c"},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Paused", "status": "False"}
            ]},
            "items": [{"n": 1}, {"n": 2}]
        });
        let r = |t: &str| Template::parse(t).expect("parses").render(&v);
        assert_eq!(r("{.metadata.name}"), "c");
        assert_eq!(r("name={.metadata.name}\\n"), "name=c\n");
        assert_eq!(
            r("{.status.conditions[?(@.type==\"Ready\")].status}"),
            "True"
        );
        assert_eq!(r("{.items[*].n}"), "1 2");
        assert_eq!(r("{.items[1].n}"), "2");
        assert_eq!(r("{.missing}"), "");
        assert!(Template::parse("{.a").is_err());
        assert!(Template::parse("{a}").is_err());
    }
}
