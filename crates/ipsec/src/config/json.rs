//! Reading configuration JSON: duplicate keys refused, fields read with
//! errors that name file, entry and field, and values that could be keys
//! never shown whole. Shared with the appliance's own configuration.

use super::ConfigError;
use serde_json::{Map, Value};
use std::fmt;

/// Where in which file a value is being read, for error messages; the
/// JSON field readers below are shared with the appliance's own config.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    /// The file.
    pub file: &'a str,
    /// The entry being read.
    pub entry: String,
}

impl Ctx<'_> {
    /// An error at `field` of the current entry.
    pub fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            entry: self.entry.clone(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// A configuration value as error messages may show it. A value that
/// could be a key (longer than 16 characters of hex digits or of mixed
/// base64, or simply longer than 48) is shown as its first two characters
/// and its length:
/// a key pasted into the wrong field must not end up in a terminal or a
/// log.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a str);

impl Shown<'_> {
    /// Whether the value is masked: it could be a key, or it is too long
    /// to tell.
    pub fn masks(&self) -> bool {
        self.is_key_like() || self.0.chars().count() > 48
    }

    /// Whether the value has the shape of a key: more than 16 characters
    /// of hex digits (with or without `0x`), or of base64 that mixes digits
    /// and both cases. A relative path with a `.`, `-`, `_` or space in it
    /// never does, whatever its length.
    pub fn is_key_like(&self) -> bool {
        let s = self.0;
        if s.chars().count() <= 16 {
            return false;
        }
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let hex = digits.chars().all(|c| c.is_ascii_hexdigit());
        // Base64 mixes digits and both cases; paths and names rarely do.
        let base64 = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
            && s.chars().any(|c| c.is_ascii_digit())
            && s.chars().any(|c| c.is_ascii_uppercase())
            && s.chars().any(|c| c.is_ascii_lowercase());
        hex || base64
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let n = s.chars().count();
        if self.masks() {
            let prefix: String = s.chars().take(2).collect();
            write!(
                f,
                "\"{prefix}...\" ({n} characters, masked: it may be a key)"
            )
        } else {
            write!(f, "\"{s}\"")
        }
    }
}

/// The object at `v`, refusing fields not in `allowed`.
pub fn expect_object<'v>(
    ctx: &Ctx<'_>,
    v: &'v Value,
    field: &str,
    allowed: &[&str],
) -> Result<&'v Map<String, Value>, ConfigError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ctx.err(field, "must be an object"))?;
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            let f = if field.is_empty() {
                k.clone()
            } else {
                format!("{field}.{k}")
            };
            return Err(ctx.err(&f, format!("unknown field (known: {})", allowed.join(", "))));
        }
    }
    Ok(obj)
}

/// An optional string field.
pub fn get_str<'v>(
    ctx: &Ctx<'_>,
    obj: &'v Map<String, Value>,
    field: &str,
) -> Result<Option<&'v str>, ConfigError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ctx.err(field, "must be a string")),
    }
}

/// A required string field.
pub fn require_str<'v>(
    ctx: &Ctx<'_>,
    obj: &'v Map<String, Value>,
    field: &str,
) -> Result<&'v str, ConfigError> {
    get_str(ctx, obj, field)?.ok_or_else(|| ctx.err(field, "is required"))
}

/// An optional non-negative integer field (a number, or a string in
/// decimal or 0x hex).
pub fn get_u64(
    ctx: &Ctx<'_>,
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<u64>, ConfigError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ctx.err(field, "must be a non-negative integer")),
        Some(Value::String(s)) => parse_int(s)
            .map(Some)
            .ok_or_else(|| ctx.err(field, format!("{} is not a number", Shown(s)))),
        Some(_) => Err(ctx.err(field, "must be a number")),
    }
}

/// A decimal or 0x-prefixed hex integer.
pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// An optional boolean field.
pub fn get_bool(
    ctx: &Ctx<'_>,
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<bool>, ConfigError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ctx.err(field, "must be true or false")),
    }
}

/// Parses the JSON text of a configuration file, with an error that says
/// where the syntax breaks. A key given twice in one object is refused
/// (RFC 8259 4 leaves duplicates to the parser; taking the last one
/// silently turned a catch-all `"action": "discard", "action": "bypass"`
/// into BYPASS).
pub fn parse_json(ctx: &Ctx<'_>, text: &str) -> Result<Value, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed =
        serde::Deserialize::deserialize(&mut de).and_then(|StrictJson(v)| de.end().map(|()| v));
    parsed.map_err(|e| {
        ctx.err(
            "",
            format!(
                "is not valid JSON (line {}, column {}): {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A JSON value whose objects have no key twice.
struct StrictJson(Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictJsonVisitor).map(StrictJson)
    }
}

struct StrictJsonVisitor;

impl<'de> serde::de::Visitor<'de> for StrictJsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key {} appears twice in one object",
                    Shown(&key)
                )));
            }
            let StrictJson(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}
