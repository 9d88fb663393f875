//! Scalar value types that users write as text: durations, byte sizes, CPU
//! amounts, and configuration values. Each parses once, on the way in, so the
//! rest of the code only ever sees valid values; each serializes back to the
//! text the user wrote, so `get -o yaml` reads like the manifest.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A length of time written as `500ms`, `5s`, `2m`, `1h` or a sum such as `1m30s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duration {
    text: String,
    millis: u64,
}

impl Duration {
    /// Parses `500ms`, `5s`, `1m30s`, `1h`.
    ///
    /// # Errors
    /// A message naming the accepted form when `text` is anything else.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid duration {text:?}: write a number and a unit (ms, s, m, h), e.g. \"5s\", \"500ms\" or \"1m30s\"")
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            millis = n
                .checked_mul(factor)
                .and_then(|v| millis.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(Self {
            text: text.trim().to_owned(),
            millis,
        })
    }

    /// The duration in milliseconds.
    pub fn as_millis(&self) -> u64 {
        self.millis
    }

    /// The duration as a standard library value.
    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h), e.g. \"5s\", \"500ms\", \"1m30s\".",
            "pattern": "^([0-9]+(ms|s|m|h))+$"
        })
    }
}

/// Accepts a YAML string or number as text, so `cpu: 0.5` and `cpu: "500m"` both work.
struct TextOrNumber;

impl Visitor<'_> for TextOrNumber {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Implements `Display`, `Serialize` (the text as written) and `Deserialize`
/// (a YAML string or number, then `parse`) for a type with a `text` field and
/// a `parse(&str) -> Result<Self, String>` constructor.
macro_rules! text_value {
    ($($t:ty),+ $(,)?) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = d.deserialize_any(TextOrNumber)?;
                Self::parse(&text).map_err(de::Error::custom)
            }
        }
    )+};
}

text_value!(Duration, ByteQuantity, CpuQuantity);

/// An amount of memory or storage: `512Mi`, `2Gi`, `1G`, `1500M` or plain bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteQuantity {
    text: String,
    bytes: u64,
}

impl ByteQuantity {
    /// Parses a byte quantity with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`)
    /// or decimal (`k`, `K`, `M`, `G`, `T`) suffix.
    ///
    /// # Errors
    /// A message naming the accepted form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid size {text:?}: write a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T), e.g. \"512Mi\" or \"20Gi\"")
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if split == 0 {
            return Err(bad());
        }
        let n: u64 = t[..split].parse().map_err(|_| bad())?;
        let factor: u64 = match &t[split..] {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = n.checked_mul(factor).ok_or_else(bad)?;
        Ok(Self {
            text: t.to_owned(),
            bytes,
        })
    }

    /// The amount in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl JsonSchema for ByteQuantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteQuantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An amount of bytes: a whole number with an optional unit (Ki, Mi, Gi, Ti, k, M, G, T), e.g. \"512Mi\", \"20Gi\".",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi|Ti|k|K|M|G|T)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

/// An amount of CPU: cores as a decimal (`0.5`, `2`) or millicores (`500m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuQuantity {
    text: String,
    millicores: u64,
}

impl CpuQuantity {
    /// Parses `0.5`, `2`, `1.25` (cores) or `500m` (millicores).
    ///
    /// # Errors
    /// A message naming the accepted form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid CPU amount {text:?}: write cores (\"0.5\", \"2\") or millicores (\"500m\"), more than zero")
        };
        let t = text.trim();
        let millicores = if let Some(m) = t.strip_suffix('m') {
            m.parse::<u64>().map_err(|_| bad())?
        } else {
            let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
            if frac.len() > 3 || !frac.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            let w: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let f: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
            w.checked_mul(1000)
                .and_then(|v| v.checked_add(f))
                .ok_or_else(bad)?
        };
        if millicores == 0 {
            return Err(bad());
        }
        Ok(Self {
            text: t.to_owned(),
            millicores,
        })
    }

    /// The amount in thousandths of a core.
    pub fn millicores(&self) -> u64 {
        self.millicores
    }

    /// The amount in nano-CPUs, the unit of Swarm's `NanoCPUs`.
    pub fn nano_cpus(&self) -> u64 {
        self.millicores.saturating_mul(1_000_000)
    }
}

impl JsonSchema for CpuQuantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CpuQuantity".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "CPU: cores as a decimal (\"0.5\", 2) or millicores (\"500m\").",
            "anyOf": [
                {"type": "string", "pattern": "^([0-9]+m|[0-9]*\\.?[0-9]{1,3})$"},
                {"type": "number", "exclusiveMinimum": 0}
            ]
        })
    }
}

/// A configuration value kept as text. Accepts YAML strings, numbers and
/// booleans so `max_connections: 200` needs no quotes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ScalarString(pub String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
                Ok(if v { "on" } else { "off" }.to_owned())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_any(V).map(ScalarString)
    }
}

impl JsonSchema for ScalarString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScalarString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A setting's value: a string, number or boolean (booleans become on/off).",
            "type": ["string", "number", "boolean"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_sum() {
        assert_eq!(Duration::parse("5s").map(|d| d.as_millis()), Ok(5_000));
        assert_eq!(Duration::parse("500ms").map(|d| d.as_millis()), Ok(500));
        assert_eq!(Duration::parse("1m30s").map(|d| d.as_millis()), Ok(90_000));
        assert_eq!(Duration::parse("2h").map(|d| d.as_millis()), Ok(7_200_000));
        for bad in ["", "5", "s", "5x", "-5s", "5 s", "1.5s"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_quantities_parse() {
        assert_eq!(
            ByteQuantity::parse("512Mi").map(|q| q.bytes()),
            Ok(512 << 20)
        );
        assert_eq!(
            ByteQuantity::parse("1G").map(|q| q.bytes()),
            Ok(1_000_000_000)
        );
        assert_eq!(ByteQuantity::parse("1024").map(|q| q.bytes()), Ok(1024));
        for bad in ["", "Mi", "1.5Gi", "12XB", "-1"] {
            assert!(ByteQuantity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ByteQuantity::parse("99999999999Ti").is_err(), "overflow");
    }

    #[test]
    fn cpu_quantities_parse() {
        assert_eq!(CpuQuantity::parse("0.5").map(|q| q.millicores()), Ok(500));
        assert_eq!(CpuQuantity::parse("500m").map(|q| q.millicores()), Ok(500));
        assert_eq!(
            CpuQuantity::parse("2").map(|q| q.nano_cpus()),
            Ok(2_000_000_000)
        );
        assert_eq!(CpuQuantity::parse(".25").map(|q| q.millicores()), Ok(250));
        for bad in ["0", "0m", "", "1.0005", "abc", "-1"] {
            assert!(CpuQuantity::parse(bad).is_err(), "{bad:?}");
        }
    }
}
