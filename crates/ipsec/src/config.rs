//! Policy files: the SPD per direction and the SAD, in JSON, with named
//! addresses as in the seeds (`home_address_1`, `home_agent_1`).
//!
//! Every error names the file, the entry and the field, and says what is
//! wrong. Unknown fields are errors too: a misspelt selector must not
//! silently widen a policy.
//!
//! Static keys are checked: AES-GCM, AES-GMAC and ChaCha20-Poly1305 need
//! the top-level opt-in `"danger_static_keys_for_counter_mode": true`
//! (their nonce is the sequence number: RFC 4106 8.1, RFC 4543 8, RFC 7634
//! 4), no key may serve two SAs, and no key may be all zeros. Errors never
//! echo a value that could be a key ([`Shown`]).
//!
//! ```json
//! {
//!   "addresses": {"home_address_1": "2001:db8:1::100", "home_agent_1": "2001:db8:1::1"},
//!   "spd": {
//!     "outbound": [{"name": "bu", "local": "home_address_1", "remote": "home_agent_1",
//!                   "proto": "mh", "mh_type": "bu", "action": "protect", "sa": "sa1"}],
//!     "inbound": []
//!   },
//!   "sad": [{"name": "sa1", "direction": "outbound", "spi": "0x1001", "mode": "transport",
//!            "transform": "aes-gcm-128", "enc_key": "0x...", "replay_window": 64}]
//! }
//! ```

use crate::crypto::TransformId;
use crate::gcm_choice::BackendSetting;
use crate::sa::{Direction, Limits, Mode, Sa, SaParams, UdpEncap};
use crate::selector::{proto, Addr, AddrSel, ProtoSel, Range16, Selector};
use crate::spd::{Action, SpdEntry};
use crate::stage::IpsecStage;
use bitsgw_wire::Timestamp;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use zeroize::Zeroizing;

mod checks;
mod entry;
mod ike_keyed;
mod json;
mod raw;

use checks::validate;
use entry::parse_entry;
use ike_keyed::parse_ike_keyed;
pub use ike_keyed::IkeKeyedSa;
pub use json::{
    field_names, parse_int, parse_json, read_document, shown_value, Ctx, Entries, Flag, HexKey,
    Int, ListHolds, ListOf, Shown,
};
use raw::{KeyedBy, RawLimits, RawPolicy, RawSa, RawTunnel};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The entry (such as `spd.outbound[2] "bu"` or `sad[0] "sa1"`).
    pub entry: String,
    /// The field within the entry.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}: {}", self.file, self.entry, self.problem)
        } else {
            write!(
                f,
                "{}: {}: field \"{}\": {}",
                self.file, self.entry, self.field, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// The action of a configured SPD entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionConfig {
    /// BYPASS.
    Bypass,
    /// DISCARD.
    Discard,
    /// PROTECT with these SAs (a bundle when more than one).
    Protect(Vec<String>),
}

impl fmt::Display for ActionConfig {
    /// `bypass`, `discard` or `protect sa A + B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionConfig::Bypass => f.write_str("bypass"),
            ActionConfig::Discard => f.write_str("discard"),
            ActionConfig::Protect(sas) => write!(f, "protect sa {}", sas.join(" + ")),
        }
    }
}

/// A configured SPD entry.
#[derive(Debug, Clone)]
pub struct EntryConfig {
    /// Name.
    pub name: String,
    /// Selectors.
    pub selector: Selector,
    /// Action.
    pub action: ActionConfig,
}

/// A parsed and validated policy file.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// The file it came from.
    pub file: String,
    /// Named addresses.
    pub addresses: BTreeMap<String, IpAddr>,
    /// Outbound SPD, in order.
    pub outbound: Vec<EntryConfig>,
    /// Inbound SPD, in order.
    pub inbound: Vec<EntryConfig>,
    /// The SAs with static keys.
    pub sas: Vec<SaParams>,
    /// The SAs keyed by IKEv2 (`"keyed_by": "ike"`), installed when a
    /// CHILD_SA is established.
    pub ike_sas: Vec<IkeKeyedSa>,
    /// Things that are legal but probably not meant.
    pub warnings: Vec<String>,
    /// The file's explicit opt-in (`"danger_static_keys_for_counter_mode":
    /// true` at the top level) to GCM, GMAC and ChaCha20-Poly1305 SAs with
    /// static keys, which RFC 4106 8.1, RFC 4543 8 and RFC 7634 4 forbid
    /// because the sequence number is their nonce. For labs, replay and
    /// benchmarks; `bitsgw run` then leases sequence numbers in a state file
    /// so that none is used twice under a key, restarts included.
    pub danger_static_keys_for_counter_mode: bool,
}

/// The top-level flag that allows counter-mode transforms with static
/// keys (see [`PolicySet::danger_static_keys_for_counter_mode`]).
pub const DANGER_STATIC_KEYS: &str = "danger_static_keys_for_counter_mode";

/// An address field: an IP address, or a name from the policy file's
/// `addresses`.
pub fn resolve_addr(
    ctx: &Ctx<'_>,
    field: &str,
    s: &str,
    names: &BTreeMap<String, IpAddr>,
) -> Result<IpAddr, ConfigError> {
    if let Some(a) = names.get(s) {
        return Ok(*a);
    }
    s.parse().map_err(|_| {
        ctx.err(
            field,
            format!("{} is neither an IP address nor a named address", Shown(s)),
        )
    })
}

fn parse_limits(raw: Option<RawLimits>) -> Limits {
    let Some(raw) = raw else {
        return Limits::default();
    };
    let limit = |v: Option<Int>| v.map(|Int(n)| n).filter(|n| *n != 0);
    Limits {
        seconds: limit(raw.seconds),
        bytes: limit(raw.bytes),
        packets: limit(raw.packets),
    }
}

fn parse_direction(ctx: &Ctx<'_>, direction: &str) -> Result<Direction, ConfigError> {
    match direction {
        "inbound" | "in" => Ok(Direction::Inbound),
        "outbound" | "out" => Ok(Direction::Outbound),
        other => Err(ctx.err(
            "direction",
            format!("{} is not inbound or outbound", Shown(other)),
        )),
    }
}

fn parse_backend(ctx: &Ctx<'_>, backend: Option<&str>) -> Result<BackendSetting, ConfigError> {
    match backend {
        None => Ok(BackendSetting::Auto),
        Some(s) => BackendSetting::from_name(s).ok_or_else(|| {
            ctx.err(
                "backend",
                format!("{} is not auto, ring or rustcrypto", Shown(s)),
            )
        }),
    }
}

fn parse_replay_window(ctx: &Ctx<'_>, replay_window: Option<Int>) -> Result<u32, ConfigError> {
    let replay_window = replay_window.map_or(64, |Int(n)| n);
    if replay_window > u64::from(crate::anti_replay::MAX_WINDOW) {
        return Err(ctx.err(
            "replay_window",
            format!("at most {} packets", crate::anti_replay::MAX_WINDOW),
        ));
    }
    Ok(replay_window as u32)
}

/// `mode` (tunnel unless given) and, in tunnel mode, `tunnel`'s endpoints.
fn parse_mode(
    ctx: &Ctx<'_>,
    mode: Option<&str>,
    tunnel: Option<RawTunnel>,
    names: &BTreeMap<String, IpAddr>,
) -> Result<Mode, ConfigError> {
    match (mode.unwrap_or("tunnel"), tunnel) {
        ("transport", None) => Ok(Mode::Transport),
        ("transport", Some(_)) => Err(ctx.err("tunnel", "transport mode has no tunnel endpoints")),
        ("tunnel", None) => Err(ctx.err("tunnel", "tunnel mode needs tunnel endpoints")),
        ("tunnel", Some(RawTunnel { local, remote })) => {
            let end = |k: &str, s: Option<String>| -> Result<Addr, ConfigError> {
                let field = format!("tunnel.{k}");
                let s = s.ok_or_else(|| ctx.err(&field, "is required"))?;
                Ok(resolve_addr(ctx, &field, &s, names)?.into())
            };
            let (local, remote) = (end("local", local)?, end("remote", remote)?);
            if local.family != remote.family {
                return Err(ctx.err(
                    "tunnel.remote",
                    "tunnel endpoints must be of one address family",
                ));
            }
            Ok(Mode::Tunnel { local, remote })
        }
        (other, _) => Err(ctx.err(
            "mode",
            format!("{} is not transport or tunnel", Shown(other)),
        )),
    }
}

fn parse_sa(
    ctx: &Ctx<'_>,
    raw: RawSa,
    names: &BTreeMap<String, IpAddr>,
) -> Result<SaParams, ConfigError> {
    let direction = parse_direction(ctx, &raw.direction)?;
    let Int(spi) = raw.spi.ok_or_else(|| ctx.err("spi", "is required"))?;
    let spi = u32::try_from(spi).map_err(|_| ctx.err("spi", "does not fit in 32 bits"))?;
    if spi < 256 {
        // RFC 4303 2.1: 1 to 255 are reserved by IANA, 0 for local use.
        return Err(ctx.err(
            "spi",
            format!("{spi} is reserved (RFC 4303 2.1); use 256 or more"),
        ));
    }
    let transform_name = raw
        .transform
        .as_deref()
        .ok_or_else(|| ctx.err("transform", "is required"))?;
    let transform = TransformId::from_name(transform_name).ok_or_else(|| {
        let known: Vec<_> = TransformId::ALL.iter().map(|t| t.name()).collect();
        ctx.err(
            "transform",
            format!(
                "unknown transform {} (known: {})",
                Shown(transform_name),
                known.join(", ")
            ),
        )
    })?;
    let key = |field: &str, given: Option<HexKey>, want: usize| {
        let k = given.map_or_else(|| Zeroizing::new(Vec::new()), |HexKey(k)| k);
        if k.len() != want {
            return Err(ctx.err(
                field,
                format!(
                    "{transform_name} needs a {want}-byte key here, this one has {} bytes",
                    k.len()
                ),
            ));
        }
        // The salt of the AEADs (RFC 4106 8.1) is not key: a zero key with
        // some salt is still a zero key.
        let salt = if field == "enc_key" && transform.is_aead() {
            4
        } else {
            0
        };
        if want > 0 && k[..want - salt].iter().all(|b| *b == 0) {
            return Err(ctx.err(
                field,
                "the key is all zeros, which is no secret; generate one (for example: head -c 36 /dev/urandom | od -An -tx1 | tr -d ' \\n')",
            ));
        }
        Ok(k)
    };
    let enc_key = key("enc_key", raw.enc_key, transform.enc_key_len())?;
    let auth_key = key("auth_key", raw.auth_key, transform.auth_key_len())?;
    let backend = parse_backend(ctx, raw.backend.as_deref())?;
    let mode = parse_mode(ctx, raw.mode.as_deref(), raw.tunnel, names)?;
    let replay_window = parse_replay_window(ctx, raw.replay_window)?;
    let (soft, hard) = match raw.lifetime {
        None => (Limits::default(), Limits::default()),
        Some(l) => (parse_limits(l.soft), parse_limits(l.hard)),
    };
    for (s, h, kind) in [
        (soft.seconds, hard.seconds, "seconds"),
        (soft.bytes, hard.bytes, "bytes"),
        (soft.packets, hard.packets, "packets"),
    ] {
        if let (Some(s), Some(h)) = (s, h) {
            if s > h {
                return Err(ctx.err(
                    &format!("lifetime.soft.{kind}"),
                    "the soft lifetime must not exceed the hard one",
                ));
            }
        }
    }
    let udp_encap = match raw.udp_encap {
        None => None,
        Some(u) => {
            let port = |k: &str, p: Option<Int>| -> Result<u16, ConfigError> {
                let p = p.map_or(u64::from(bitsgw_wire::esp::NAT_T_PORT), |Int(p)| p);
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| ctx.err(&format!("udp_encap.{k}"), "must be from 1 to 65535"))
            };
            Some(UdpEncap {
                local_port: port("local_port", u.local_port)?,
                remote_port: port("remote_port", u.remote_port)?,
            })
        }
    };
    let destination = match (direction, mode) {
        (Direction::Inbound, Mode::Tunnel { local, .. }) => Some(local),
        _ => None,
    };
    Ok(SaParams {
        name: raw.name,
        direction,
        spi,
        mode,
        transform,
        backend,
        enc_key,
        auth_key,
        replay_window,
        esn: raw.esn.is_some_and(|Flag(b)| b),
        soft,
        hard,
        udp_encap,
        destination,
        negotiated_keys: false,
    })
}

/// Parses and validates the text of a policy file named `file`.
pub fn parse_policy(text: &str, file: &str) -> Result<PolicySet, ConfigError> {
    let mut ctx = Ctx {
        file,
        entry: "file".into(),
    };
    let raw: RawPolicy = read_document(file, &parse_json(&ctx, text)?, Entries::ListItems)?;
    let mut set = PolicySet {
        file: file.to_string(),
        danger_static_keys_for_counter_mode: raw
            .danger_static_keys_for_counter_mode
            .is_some_and(|Flag(b)| b),
        ..PolicySet::default()
    };
    ctx.entry = "addresses".into();
    for (name, s) in raw.addresses.unwrap_or_default() {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| ctx.err(&name, format!("{} is not an IP address", Shown(&s))))?;
        if name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("any") {
            return Err(ctx.err(&name, "a name must not look like an address or \"any\""));
        }
        set.addresses.insert(name, ip);
    }
    for (i, raw_sa) in raw.sad.unwrap_or_default().0.into_iter().enumerate() {
        ctx.entry = format!("sad[{i}] {}", Shown(&raw_sa.name));
        if set.sa_direction_mode(&raw_sa.name).is_some() {
            return Err(ctx.err("name", "another SA has this name"));
        }
        match raw_sa.keyed_by {
            Some(KeyedBy::Ike) => set
                .ike_sas
                .push(parse_ike_keyed(&ctx, raw_sa, &set.addresses)?),
            None | Some(KeyedBy::Static) => set.sas.push(parse_sa(&ctx, raw_sa, &set.addresses)?),
        }
    }
    let spd = raw.spd.map(|s| (s.outbound, s.inbound)).unwrap_or_default();
    for (dir_name, entries, list) in [
        ("outbound", spd.0, &mut set.outbound),
        ("inbound", spd.1, &mut set.inbound),
    ] {
        for (i, e) in entries.unwrap_or_default().0.into_iter().enumerate() {
            ctx.entry = format!("spd.{dir_name}[{i}] {}", Shown(&e.name));
            let entry = parse_entry(&ctx, e, &set.addresses)?;
            if list.iter().any(|o: &EntryConfig| o.name == entry.name) {
                return Err(ctx.err("name", "another entry of this SPD has this name"));
            }
            list.push(entry);
        }
    }
    validate(&mut set)?;
    Ok(set)
}

/// What a reload changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// SAs kept as they were (sequence numbers, windows and counters too).
    pub kept: usize,
    /// SAs installed new or replaced.
    pub installed: usize,
    /// SAs removed.
    pub removed: usize,
}

impl PolicySet {
    /// Replaces the policies of a running stage with these, keeping every
    /// SA whose parameters (keys included) did not change, so traffic that
    /// the old and the new sets both allow flows on undisturbed: its
    /// sequence numbers and replay windows carry over.
    ///
    /// All or nothing: every new or changed SA is built first, and only
    /// when all of them are does the stage change; on an error it is left
    /// exactly as it was. The new set decides which SA an inbound SPI
    /// selects (RFC 4301 4.1): an SA renamed with its SPI kept replaces the
    /// old one, and a retiring predecessor yields its SPI to the SA the set
    /// gives it to. What can fail does not depend on the stage, so a set
    /// that installs on an empty stage ([`PolicySet::apply`]) reloads on
    /// every stage.
    pub fn reload(
        &self,
        stage: &mut IpsecStage,
        now: Timestamp,
    ) -> Result<ReloadSummary, ConfigError> {
        let mut summary = ReloadSummary::default();
        let mut built = Vec::new();
        for (i, sa) in self.sas.iter().enumerate() {
            let same = stage
                .sad()
                .by_name(&sa.name)
                .and_then(|id| stage.sad().get(id))
                .is_some_and(|old| old.fingerprint == sa.fingerprint());
            if same {
                summary.kept += 1;
                continue;
            }
            let gcm = stage.config().gcm;
            built
                .push(Sa::new(sa.clone(), &gcm, now).map_err(|e| self.sa_error(i, e.to_string()))?);
        }
        // Nothing below can fail.
        let gone: Vec<_> = stage
            .sad()
            .iter()
            .filter(|(_, sa)| self.sa_direction_mode(sa.name()).is_none())
            .map(|(id, _)| id)
            .collect();
        for id in gone {
            stage.remove_sa(id);
            summary.removed += 1;
        }
        self.load_spd(stage);
        for sa in built {
            stage.install_built(sa);
            summary.installed += 1;
        }
        Ok(summary)
    }

    /// The direction and mode of the SA named `name`, static or keyed by
    /// IKE; none if the file has no such SA.
    pub fn sa_direction_mode(&self, name: &str) -> Option<(Direction, Mode)> {
        self.sas
            .iter()
            .find(|s| s.name == name)
            .map(|s| (s.direction, s.mode))
            .or_else(|| {
                self.ike_sas
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| (s.direction, s.mode))
            })
    }

    /// The IKE-keyed SA named `name`.
    pub fn ike_sa(&self, name: &str) -> Option<&IkeKeyedSa> {
        self.ike_sas.iter().find(|s| s.name == name)
    }

    fn sa_error(&self, index: usize, problem: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            entry: format!("sad[{index}] {}", Shown(&self.sas[index].name)),
            field: String::new(),
            problem,
        }
    }

    fn load_spd(&self, stage: &mut IpsecStage) {
        let mut build = |list: &[EntryConfig]| -> Vec<SpdEntry> {
            list.iter()
                .map(|e| SpdEntry {
                    name: e.name.as_str().into(),
                    selector: e.selector,
                    action: match &e.action {
                        ActionConfig::Bypass => Action::Bypass,
                        ActionConfig::Discard => Action::Discard,
                        ActionConfig::Protect(n) => {
                            Action::Protect(n.iter().map(|n| stage.sa_name(n)).collect())
                        }
                    },
                })
                .collect()
        };
        let outbound = build(&self.outbound);
        let inbound = build(&self.inbound);
        stage.set_spd(outbound, inbound);
    }

    /// Loads the SPDs and installs the SAs into `stage` at `now`.
    pub fn apply(&self, stage: &mut IpsecStage, now: Timestamp) -> Result<(), ConfigError> {
        self.load_spd(stage);
        for (i, sa) in self.sas.iter().enumerate() {
            stage
                .install_sa(sa.clone(), now)
                .map_err(|e| self.sa_error(i, e.to_string()))?;
        }
        Ok(())
    }
}
