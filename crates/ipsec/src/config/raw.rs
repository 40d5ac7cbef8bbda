//! A policy file as serde reads it, before any meaning is given to its
//! strings: every object refuses fields it does not know (a misspelt
//! selector must not silently widen a policy), and a key is a [`HexKey`]
//! from the moment it is read. The conversion to [`super::PolicySet`]
//! checks what the values mean.

use super::json::{Flag, HexKey, Int, ListHolds, ListOf, Shown};
use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawPolicy {
    pub addresses: Option<BTreeMap<String, String>>,
    pub spd: Option<RawSpd>,
    pub sad: Option<ListOf<RawSa, Sas>>,
    pub danger_static_keys_for_counter_mode: Option<Flag>,
    #[serde(rename = "comment")]
    pub _comment: Option<IgnoredAny>,
}

/// The SPD of each direction, in order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(super) struct RawSpd {
    pub outbound: Option<ListOf<RawEntry, SpdEntries>>,
    pub inbound: Option<ListOf<RawEntry, SpdEntries>>,
}

/// One SPD entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an SPD entry object")]
pub(super) struct RawEntry {
    pub name: String,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub proto: Option<Scalar>,
    pub local_port: Option<Scalar>,
    pub remote_port: Option<Scalar>,
    pub icmp_type: Option<Scalar>,
    pub icmp_code: Option<Scalar>,
    pub mh_type: Option<Scalar>,
    pub action: String,
    pub sa: Option<SaNames>,
    #[serde(rename = "comment")]
    pub _comment: Option<IgnoredAny>,
}

/// One SA.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an SA object")]
pub(super) struct RawSa {
    pub name: String,
    pub direction: String,
    pub spi: Option<Int>,
    pub mode: Option<String>,
    pub tunnel: Option<RawTunnel>,
    /// Required unless IKE keys the SA.
    pub transform: Option<String>,
    pub enc_key: Option<HexKey>,
    pub auth_key: Option<HexKey>,
    pub backend: Option<String>,
    pub replay_window: Option<Int>,
    pub esn: Option<Flag>,
    pub lifetime: Option<RawLifetime>,
    pub udp_encap: Option<RawUdpEncap>,
    pub keyed_by: Option<KeyedBy>,
    #[serde(rename = "comment")]
    pub _comment: Option<IgnoredAny>,
}

/// Who keys an SA: the file (`static`, the default) or IKEv2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyedBy {
    Static,
    Ike,
}

impl<'de> Deserialize<'de> for KeyedBy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "ike" => Ok(KeyedBy::Ike),
            Value::String(s) if s == "static" => Ok(KeyedBy::Static),
            other => Err(D::Error::custom(format!(
                "{} is not \"ike\" or \"static\"",
                Shown(&other.to_string())
            ))),
        }
    }
}

/// A tunnel-mode SA's endpoints: addresses or names of addresses.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with local and remote")]
pub(super) struct RawTunnel {
    pub local: Option<String>,
    pub remote: Option<String>,
}

/// An SA's soft and hard lifetimes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with soft and hard")]
pub(super) struct RawLifetime {
    pub soft: Option<RawLimits>,
    pub hard: Option<RawLimits>,
}

/// One lifetime; 0 or absent is no limit.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with seconds, bytes and packets"
)]
pub(super) struct RawLimits {
    pub seconds: Option<Int>,
    pub bytes: Option<Int>,
    pub packets: Option<Int>,
}

/// UDP encapsulation (RFC 3948) and its ports.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with local_port and remote_port"
)]
pub(super) struct RawUdpEncap {
    pub local_port: Option<Int>,
    pub remote_port: Option<Int>,
}

/// A selector value: a number, or a string (a name, a number, a range or
/// `any`) that the entry's conversion reads.
pub(super) enum Scalar {
    Number(Number),
    Text(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(Scalar::Number(n)),
            Value::String(s) => Ok(Scalar::Text(s)),
            _ => Err(D::Error::custom(
                "must be a number or a string (a name or a \"lo-hi\" range)",
            )),
        }
    }
}

/// The SAs of a protect entry: one name, or a bundle's names in order.
pub(super) struct SaNames(pub Vec<String>);

impl<'de> Deserialize<'de> for SaNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(SaNames(vec![s])),
            Value::Array(a) if !a.is_empty() => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(D::Error::custom("must list SA names")),
                })
                .collect::<Result<_, _>>()
                .map(SaNames),
            _ => Err(D::Error::custom("must be an SA name or a list of them")),
        }
    }
}

/// The SAD holds SAs.
pub(super) struct Sas;

impl ListHolds for Sas {
    const WHAT: &'static str = "SAs";
}

/// An SPD holds entries.
pub(super) struct SpdEntries;

impl ListHolds for SpdEntries {
    const WHAT: &'static str = "entries";
}
