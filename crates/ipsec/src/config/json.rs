//! Reading configuration JSON: duplicate keys refused, fields read with
//! errors that name file, entry and field, and values that could be keys
//! never shown whole. Shared with the appliance's own configuration.

use super::ConfigError;
use serde_json::Value;
use std::fmt;
use zeroize::Zeroizing;

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

/// A JSON value as error messages may show it: a string through
/// [`Shown`], anything else as its JSON text, masked the same way.
pub fn shown_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => Shown(s).to_string(),
        other => {
            let text = other.to_string();
            if Shown(&text).masks() {
                Shown(&text).to_string()
            } else {
                text
            }
        }
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

/// Reads a configuration document into its typed form `T` (serde derive
/// with `deny_unknown_fields`), with an error that names the file, the
/// entry and the field: the path to the value (`sad[0].lifetime.soft`)
/// splits at the first list index into the entry, labelled with its
/// `"name"` as the entry's own checks label it (`sad[0] "sa1"`), and the
/// field. serde's own messages are reworded so they never show a value:
/// one in the wrong field could be a key.
pub fn read_document<'v, T: serde::Deserialize<'v>>(
    file: &str,
    root: &'v Value,
    entries: Entries<'_>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(root).map_err(|e| {
        let mut path: Vec<Step> = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Step::Index(*index),
                serde_path_to_error::Segment::Map { key } => Step::Key(key.clone()),
                _ => Step::Key("?".into()),
            })
            .collect();
        let message = e.into_inner().to_string();
        let problem = match message.strip_prefix("missing field `") {
            Some(missing) => {
                path.push(Step::Key(missing.trim_end_matches('`').to_string()));
                "is required".to_string()
            }
            None => reworded(&message),
        };
        let list_item = path.iter().position(|s| matches!(s, Step::Index(_)));
        let (entry, field) = match (entries, list_item) {
            (Entries::Whole(name), _) => (name.to_string(), joined(&path)),
            (Entries::ListItems, Some(i)) => {
                let name = lookup(root, &path[..=i])
                    .and_then(|v| v.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (
                    format!("{} {}", joined(&path[..=i]), Shown(name)),
                    joined(&path[i + 1..]),
                )
            }
            (Entries::ListItems, None) if path.len() > 1 => {
                (joined(&path[..1]), joined(&path[1..]))
            }
            (Entries::ListItems, None) => ("top level".to_string(), joined(&path)),
        };
        Ctx { file, entry }.err(&field, problem)
    })
}

/// One step of the path to a value.
enum Step {
    Key(String),
    Index(usize),
}

/// `a.b[2].c`; a key that could be a key (a pasted secret) is masked.
fn joined(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if Shown(k).masks() {
                    out.push_str(&Shown(k).to_string());
                } else {
                    out.push_str(k);
                }
            }
        }
    }
    out
}

fn lookup<'v>(root: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })
}

/// serde's messages without the value they found (`invalid type: string
/// "...", expected a boolean` becomes `must be a boolean`); the field
/// that was not known is in the path already. Messages of this module's
/// own types pass as they are.
fn reworded(message: &str) -> String {
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e);
    if message.starts_with("unknown field `") {
        let known = expected.unwrap_or("no field here").replace('`', "");
        return format!("unknown field (expected {known})");
    }
    match expected {
        Some(e) if message.starts_with("invalid ") => format!("must be {e}"),
        _ => message.to_string(),
    }
}

/// A boolean field: `true` or `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> serde::Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(Flag(b)),
            _ => Err(serde::de::Error::custom("must be true or false")),
        }
    }
}

/// A non-negative integer field: a number, or a string in decimal or 0x
/// hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int(pub u64);

impl<'de> serde::Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Int)
                .ok_or_else(|| D::Error::custom("must be a non-negative integer")),
            Value::String(s) => parse_int(&s)
                .map(Int)
                .ok_or_else(|| D::Error::custom(format!("{} is not a number", Shown(&s)))),
            _ => Err(D::Error::custom("must be a number")),
        }
    }
}

/// A key in hex (with or without `0x`), zeroized when dropped; neither
/// its `Debug` nor an error shows it.
pub struct HexKey(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexKey({} bytes, masked)", self.0.len())
    }
}

impl<'de> serde::Deserialize<'de> for HexKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = Zeroizing::new(String::deserialize(d)?);
        let hex = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(&text);
        if !hex.len().is_multiple_of(2) {
            return Err(D::Error::custom("hex key has an odd number of digits"));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(hex.len() / 2));
        for pair in hex.as_bytes().chunks(2) {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(D::Error::custom("key is not hexadecimal")),
            }
        }
        Ok(HexKey(out))
    }
}
/// How the path to a value names the entry and the field.
#[derive(Debug, Clone, Copy)]
pub enum Entries<'a> {
    /// Each item of a list is an entry, labelled by its `"name"`
    /// (`sad[0] "sa1"`, field `lifetime.soft`); outside lists the
    /// top-level key is the entry.
    ListItems,
    /// The document is one entry of this name; the whole path is the
    /// field (`appliance`, field `mobility.nodes[0].home`).
    Whole(&'a str),
}

/// The fields of a struct that serde derive reads: what
/// `deny_unknown_fields` accepts.
pub fn field_names<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

/// A deserializer that only notes the fields of the struct asked for.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("fields noted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// What a [`ListOf`] holds, for its error: `"a list of " + WHAT`.
pub trait ListHolds {
    /// Such as `"EtherTypes"`.
    const WHAT: &'static str;
}

/// A list field whose error says what it should hold ("must be a list of
/// EtherTypes"); its items are read in place, so their errors name their
/// index.
pub struct ListOf<T, W>(pub Vec<T>, std::marker::PhantomData<W>);

impl<T: fmt::Debug, W> fmt::Debug for ListOf<T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, T: serde::Deserialize<'de>, W: ListHolds> serde::Deserialize<'de> for ListOf<T, W> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T, W>(std::marker::PhantomData<(T, W)>);
        impl<'de, T: serde::Deserialize<'de>, W: ListHolds> serde::de::Visitor<'de> for Items<T, W> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of {}", W::WHAT)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(items)
            }
        }
        d.deserialize_seq(Items::<T, W>(std::marker::PhantomData))
            .map(|items| ListOf(items, std::marker::PhantomData))
    }
}

impl<T, W> Default for ListOf<T, W> {
    fn default() -> Self {
        ListOf(Vec::new(), std::marker::PhantomData)
    }
}
