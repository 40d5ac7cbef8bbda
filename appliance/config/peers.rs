//! IKEv2 peers (`"peers"`): who keys which SAs of the policy with IKEv2
//! (RFC 7296), with a pre-shared key read from a file.
//!
//! ```json
//! "peers": [{
//!   "name": "site-b",
//!   "local": "203.0.113.1", "remote": "203.0.113.2",
//!   "local_id": "fqdn:gw-a.example", "remote_id": "fqdn:gw-b.example",
//!   "psk_file": "site-b.psk",
//!   "ike_proposals": ["aes128gcm16-prfsha256-ecp256"],
//!   "esp_proposals": ["aes128gcm16"],
//!   "ike_lifetime_secs": 14400, "child_lifetime_secs": 3600,
//!   "rekey_jitter_secs": 60, "liveness_secs": 30,
//!   "start": "initiate",
//!   "children": [{"outbound": "a-to-b", "inbound": "b-to-a"}]
//! }]
//! ```
//!
//! `local` is one of the appliance's network addresses (IKE runs on UDP
//! 500 and 4500 there); `remote` the peer's. Identities are
//! `fqdn:NAME`, `ipv4:ADDR`, `ipv6:ADDR` or `keyid:HEX`. Proposals use
//! strongSwan's notation (`bitsgw_ike::names`). `start` is `initiate` (the
//! appliance starts the IKE SA when it starts, and again when it goes
//! down), `respond`, or `trap` (strongSwan's name: the first packet that
//! needs the peer's outbound SA starts the IKE SA, RFC 4301 acquire).
//! `retransmit_tries` is how often a request is sent again before the
//! peer is declared dead (RFC 7296 2.4; default 5, the waits doubling
//! from 1 s to at most 16 s). Each child names an outbound and an inbound SA of
//! the policy file, both `"keyed_by": "ike"` and of one mode; the SPD
//! entries that protect with the outbound SA give the CHILD_SA's traffic
//! selectors. One child per peer for now.
//!
//! The PSK file (relative to the configuration file) holds the key, a
//! trailing newline ignored; it must not be readable by group or others.
//! The key is never logged or shown, and is zeroized when dropped.

use super::raw::{Peers, ProposalNames, RawChild, RawPeer};
use super::*;
use bitsgw_ipsec::config::ListOf;
use bitsgw_ipsec::sa::{Direction, Mode as SaMode};
use zeroize::Zeroizing;

/// What the appliance does with a peer when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAction {
    /// Initiates the IKE SA at start, and again after it went down.
    Initiate,
    /// Waits for the peer.
    Respond,
    /// Initiates when a packet needs the child's outbound SA and it is
    /// not installed (RFC 4301 acquire); strongSwan's `start_action = trap`.
    Trap,
}

impl StartAction {
    /// The name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            StartAction::Initiate => "initiate",
            StartAction::Respond => "respond",
            StartAction::Trap => "trap",
        }
    }
}

/// A CHILD_SA: the two SAs of the policy it keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSettings {
    /// The outbound SA's name.
    pub outbound: String,
    /// The inbound SA's name.
    pub inbound: String,
}

/// One IKEv2 peer.
#[derive(Clone)]
pub struct PeerSettings {
    /// Its name.
    pub name: String,
    /// Our address (one of the network addresses).
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// Our identity, as written (`fqdn:...`).
    pub local_id: String,
    /// The peer's identity, as written.
    pub remote_id: String,
    /// The pre-shared key (never shown).
    pub psk: Zeroizing<Vec<u8>>,
    /// IKE SA proposals, as written, preferred first.
    pub ike_proposals: Vec<String>,
    /// ESP proposals, as written, preferred first.
    pub esp_proposals: Vec<String>,
    /// IKE SA lifetime (until rekeyed).
    pub ike_lifetime: Duration,
    /// CHILD_SA lifetime (until rekeyed).
    pub child_lifetime: Duration,
    /// How much earlier, at most, a rekey starts (a random amount, so that
    /// two peers' rekeys rarely collide; default a tenth of the CHILD_SA
    /// lifetime).
    pub rekey_jitter: Duration,
    /// Liveness check interval (RFC 7296 2.4); none: off.
    pub liveness: Option<Duration>,
    /// Requests sent again before the peer is declared dead.
    pub retransmit_tries: u32,
    /// Initiate, respond, or initiate on traffic.
    pub start: StartAction,
    /// The CHILD_SAs.
    pub children: Vec<ChildSettings>,
}

impl core::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("name", &self.name)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("psk", &"<masked>")
            .field("start", &self.start)
            .field("children", &self.children)
            .finish_non_exhaustive()
    }
}

/// The PSK of `path` (named `shown` in errors): refused when group or
/// others may read it, or when shorter than 16 octets (RFC 7296 2.15
/// wants a key as strong as the PRF's).
fn read_psk(ctx: &Ctx<'_>, path: &Path, shown: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| ctx.err("psk_file", format!("{shown}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ctx.err(
            "psk_file",
            format!(
                "{shown} is readable by group or others (mode {mode:03o}); a pre-shared key must be readable by its owner only (chmod 600)"
            ),
        ));
    }
    let mut key = Zeroizing::new(
        std::fs::read(path).map_err(|e| ctx.err("psk_file", format!("{shown}: {e}")))?,
    );
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < 16 {
        return Err(ctx.err(
            "psk_file",
            format!("{shown} holds fewer than 16 octets of key"),
        ));
    }
    Ok(key)
}

/// A list of proposals, as written: at least one.
fn proposals(
    ctx: &Ctx<'_>,
    list: Option<ListOf<String, ProposalNames>>,
    field: &str,
) -> Result<Vec<String>, ConfigError> {
    list.map(|l| l.0)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ctx.err(field, "must be a non-empty list of names"))
}

fn secs(ctx: &Ctx<'_>, value: Option<Int>, field: &str) -> Result<Option<Duration>, ConfigError> {
    match value {
        Some(Int(0)) => Err(ctx.err(field, "must not be zero")),
        s => Ok(s.map(|Int(s)| Duration::from_secs(s))),
    }
}

/// What keeps `peers` from keying `policy`'s IKE-keyed SAs: an SA a child
/// names that is not IKE-keyed there, or an IKE-keyed SA no child names.
pub fn peers_mismatch(peers: &[PeerSettings], policy: &PolicySet) -> Option<String> {
    let named = |n: &str| {
        peers
            .iter()
            .flat_map(|p| &p.children)
            .any(|c| c.inbound == n || c.outbound == n)
    };
    if let Some(sa) = policy.ike_sas.iter().find(|s| !named(&s.name)) {
        return Some(format!(
            "SA {} is keyed by IKE, but no peer names it",
            Shown(&sa.name)
        ));
    }
    peers
        .iter()
        .flat_map(|p| p.children.iter().map(move |c| (p, c)))
        .flat_map(|(p, c)| [(p, &c.inbound), (p, &c.outbound)])
        .find(|(_, n)| policy.ike_sa(n).is_none())
        .map(|(p, n)| {
            format!(
                "peer {} keys SA {}, which is not keyed by IKE there",
                Shown(&p.name),
                Shown(n)
            )
        })
}

/// Parses `peers` and checks it against the policy and the network
/// addresses: every IKE-keyed SA of the policy is keyed by exactly one
/// peer, and every SA a peer names is IKE-keyed in the right direction.
/// Each peer is read on its own, so that an error names it
/// (`peers[0] "site-b"`) as the checks after reading do.
pub(super) fn peers(
    file: &str,
    list: Option<ListOf<Value, Peers>>,
    dir: &Path,
    policy: &PolicySet,
    network: &OwnAddresses,
) -> Result<Vec<PeerSettings>, ConfigError> {
    let mut out: Vec<PeerSettings> = Vec::new();
    let mut keyed: Vec<String> = Vec::new();
    for (i, v) in list.unwrap_or_default().0.iter().enumerate() {
        let label = v.get("name").and_then(Value::as_str).unwrap_or("");
        let ctx = Ctx {
            file,
            entry: format!("peers[{i}] {}", Shown(label)),
        };
        let p: RawPeer = read_document(file, v, Entries::Whole(&ctx.entry))?;
        out.push(peer(&ctx, p, dir, policy, network, &out, &mut keyed)?);
    }
    if let Some(sa) = policy.ike_sas.iter().find(|s| !keyed.contains(&s.name)) {
        return Err(ConfigError {
            file: policy.file.clone(),
            entry: format!("sad {}", Shown(&sa.name)),
            field: "keyed_by".into(),
            problem: format!("keyed by IKE, but no peer of {file} names it in its children",),
        });
    }
    Ok(out)
}

/// One peer, checked against the peers before it (`others`) and the SAs
/// they key (`keyed`, which its children join).
fn peer(
    ctx: &Ctx<'_>,
    p: RawPeer,
    dir: &Path,
    policy: &PolicySet,
    network: &OwnAddresses,
    others: &[PeerSettings],
    keyed: &mut Vec<String>,
) -> Result<PeerSettings, ConfigError> {
    if others.iter().any(|o| o.name == p.name) {
        return Err(ctx.err("name", "another peer has this name"));
    }
    let addr = |field: &str, s: &str| resolve_addr(ctx, field, s, &policy.addresses);
    let (local, remote) = (addr("local", &p.local)?, addr("remote", &p.remote)?);
    if !network.addresses.iter().any(|(a, _)| *a == local) {
        return Err(ctx.err(
            "local",
            format!("{local} is not one of the appliance's network addresses (addresses.network)"),
        ));
    }
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(ctx.err("remote", "local and remote must be of one address family"));
    }
    if others
        .iter()
        .any(|o| o.remote == remote && o.local == local)
    {
        return Err(ctx.err("remote", "another peer has these addresses"));
    }
    for (field, id) in [("local_id", &p.local_id), ("remote_id", &p.remote_id)] {
        bitsgw_ike::names::identity(id).map_err(|e| ctx.err(field, e))?;
    }
    let psk = read_psk(ctx, &dir.join(&p.psk_file), &p.psk_file)?;
    let ike_proposals = proposals(ctx, p.ike_proposals, "ike_proposals")?;
    for (j, s) in ike_proposals.iter().enumerate() {
        bitsgw_ike::names::ike_proposal(s)
            .map_err(|e| ctx.err(&format!("ike_proposals[{j}]"), e))?;
    }
    let esp_proposals = proposals(ctx, p.esp_proposals, "esp_proposals")?;
    for (j, s) in esp_proposals.iter().enumerate() {
        bitsgw_ike::names::esp_proposal(s)
            .map_err(|e| ctx.err(&format!("esp_proposals[{j}]"), e))?;
    }
    let start = match p.start.as_deref().unwrap_or("respond") {
        "initiate" => StartAction::Initiate,
        "respond" => StartAction::Respond,
        "trap" => StartAction::Trap,
        other => {
            return Err(ctx.err(
                "start",
                format!("{} is not initiate, respond or trap", Shown(other)),
            ))
        }
    };
    let children_given = p
        .children
        .ok_or_else(|| ctx.err("children", "must be a list of children"))?
        .0;
    if children_given.len() != 1 {
        return Err(ctx.err(
            "children",
            "one child (an outbound and an inbound SA) per peer is supported",
        ));
    }
    let mut children = Vec::new();
    for (j, c) in children_given.into_iter().enumerate() {
        children.push(child(ctx, &format!("children[{j}]"), c, policy, keyed)?);
    }
    let child_lifetime = secs(ctx, p.child_lifetime_secs, "child_lifetime_secs")?
        .unwrap_or(Duration::from_secs(3600));
    Ok(PeerSettings {
        name: p.name,
        local,
        remote,
        local_id: p.local_id,
        remote_id: p.remote_id,
        psk,
        ike_proposals,
        esp_proposals,
        ike_lifetime: secs(ctx, p.ike_lifetime_secs, "ike_lifetime_secs")?
            .unwrap_or(Duration::from_secs(14400)),
        child_lifetime,
        rekey_jitter: secs(ctx, p.rekey_jitter_secs, "rekey_jitter_secs")?
            .unwrap_or(child_lifetime / 10),
        liveness: secs(ctx, p.liveness_secs, "liveness_secs")?,
        retransmit_tries: match p.retransmit_tries {
            None => bitsgw_ike::Retransmit::default().tries,
            Some(Int(n @ 1..=10)) => n as u32,
            Some(_) => return Err(ctx.err("retransmit_tries", "must be 1 to 10")),
        },
        start,
        children,
    })
}

/// A child (`field`, such as `children[0]`): an outbound and an inbound
/// IKE-keyed SA of the policy, of one mode, that no other child keys.
fn child(
    ctx: &Ctx<'_>,
    field: &str,
    c: RawChild,
    policy: &PolicySet,
    keyed: &mut Vec<String>,
) -> Result<ChildSettings, ConfigError> {
    let mut sa = |dir_name: &str, n: String, want: Direction| -> Result<String, ConfigError> {
        let f = format!("{field}.{dir_name}");
        let Some(sa) = policy.ike_sa(&n) else {
            let why = if policy.sa_direction_mode(&n).is_some() {
                "has static keys in the policy file; an SA keyed by a peer is \"keyed_by\": \"ike\" there"
            } else {
                "is not an SA of the policy file"
            };
            return Err(ctx.err(&f, format!("{} {why}", Shown(&n))));
        };
        if sa.direction != want {
            return Err(ctx.err(
                &f,
                format!("{} is {}, not {dir_name}", Shown(&n), sa.direction.name()),
            ));
        }
        if keyed.contains(&n) {
            return Err(ctx.err(&f, format!("{} is keyed by another child", Shown(&n))));
        }
        keyed.push(n.clone());
        Ok(n)
    };
    let outbound = sa("outbound", c.outbound, Direction::Outbound)?;
    let inbound = sa("inbound", c.inbound, Direction::Inbound)?;
    let mode = |n: &str| policy.ike_sa(n).map(|s| s.mode);
    if matches!(mode(&outbound), Some(SaMode::Transport))
        != matches!(mode(&inbound), Some(SaMode::Transport))
    {
        return Err(ctx.err(
            &format!("{field}.inbound"),
            "the outbound and the inbound SA must be of one mode",
        ));
    }
    Ok(ChildSettings { outbound, inbound })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const POLICY: &str = r#"{"spd": {
        "outbound": [{"name": "o", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "out"}],
        "inbound": [{"name": "i", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "in"}]},
      "sad": [
        {"name": "out", "direction": "outbound", "keyed_by": "ike", "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}},
        {"name": "in", "direction": "inbound", "keyed_by": "ike", "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}}]}"#;

    /// A directory with the policy and a PSK file of `mode`; the
    /// configuration's text with `children` and a PSK file name.
    fn setup(tag: &str, mode: u32) -> (PathBuf, impl Fn(&str, &str) -> String) {
        let dir = std::env::temp_dir().join(format!("bitsgw-peers-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.json"), POLICY).unwrap();
        let psk = dir.join("k.psk");
        std::fs::write(&psk, "a sixteen-octet or longer key\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = |children: &str, psk: &str| {
            format!(
                r#"{{"role": "gateway", "policy": "p.json",
                "ports": {{"host": {{"type": "af_packet", "interface": "h"}}, "network": {{"type": "af_packet", "interface": "n"}}}},
                "addresses": {{"network": ["203.0.113.1/24"]}},
                "peers": [{{"name": "b", "local": "203.0.113.1", "remote": "203.0.113.2",
                  "local_id": "fqdn:a.example", "remote_id": "fqdn:b.example", "psk_file": "{psk}",
                  "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
                  "start": "initiate", "children": [{children}]}}]}}"#
            )
        };
        (dir, text)
    }

    const CHILD: &str = r#"{"outbound": "out", "inbound": "in"}"#;

    #[test]
    fn a_peer_keys_the_policy_s_ike_sas_and_its_psk_stays_masked() {
        let (dir, text) = setup("ok", 0o600);
        let cfg = parse(&text(CHILD, "k.psk"), &dir.join("c.json")).unwrap();
        let p = &cfg.peers[0];
        assert_eq!(p.start, StartAction::Initiate);
        assert_eq!(&p.psk[..], b"a sixteen-octet or longer key");
        assert!(!format!("{cfg:?}").contains("sixteen"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_psk_file_readable_by_others_is_refused_naming_file_and_field() {
        let (dir, text) = setup("mode", 0o644);
        let e = parse(&text(CHILD, "k.psk"), &dir.join("c.json")).unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("peers[0] \"b\"", "psk_file")
        );
        assert!(
            e.problem.contains("k.psk") && e.problem.contains("644"),
            "{e}"
        );
        assert!(!e.to_string().contains("sixteen"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn read_errors_name_the_peer_and_the_field() {
        let (dir, text) = setup("read", 0o600);
        let path = dir.join("c.json");
        let at = |t: String| {
            let e = parse(&t, &path).unwrap_err();
            (e.entry, e.field, e.problem)
        };
        let peer = "peers[0] \"b\"".to_string();
        let (entry, field, problem) = at(text(CHILD, "k.psk").replace("psk_file", "pks_file"));
        assert_eq!((&entry, field.as_str()), (&peer, "pks_file"));
        assert!(problem.starts_with("unknown field"), "{problem}");
        let (entry, field, problem) = at(text(r#"{"outbound": "out"}"#, "k.psk"));
        assert_eq!(
            (&entry, field.as_str(), problem.as_str()),
            (&peer, "children[0].inbound", "is required")
        );
        let (entry, field, _) = at(text(CHILD, "k.psk").replace(
            r#""esp_proposals": ["aes128gcm16"]"#,
            r#""esp_proposals": ["aes128gcm16", 5]"#,
        ));
        assert_eq!((&entry, field.as_str()), (&peer, "esp_proposals[1]"));
        let (entry, field, problem) = at(text(CHILD, "k.psk").replace(
            r#""esp_proposals": ["aes128gcm16"]"#,
            r#""esp_proposals": []"#,
        ));
        assert_eq!(
            (&entry, field.as_str(), problem.as_str()),
            (&peer, "esp_proposals", "must be a non-empty list of names")
        );
        let (entry, field, problem) = at(text(CHILD, "k.psk").replace(
            r#""start": "initiate""#,
            r#""liveness_secs": 0, "start": "initiate""#,
        ));
        assert_eq!(
            (&entry, field.as_str(), problem.as_str()),
            (&peer, "liveness_secs", "must not be zero")
        );
        let (entry, field, problem) =
            at(text(CHILD, "k.psk").replace(r#""start": "initiate""#, r#""start": "on-demand""#));
        assert_eq!((&entry, field.as_str()), (&peer, "start"));
        assert!(problem.contains("initiate, respond or trap"), "{problem}");
        let (entry, field, _) = at(text(CHILD, "k.psk").replace(
            r#""start": "initiate""#,
            r#""retransmit_tries": 0, "start": "initiate""#,
        ));
        assert_eq!((&entry, field.as_str()), (&peer, "retransmit_tries"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_trapping_peer_starts_on_traffic() {
        let (dir, text) = setup("trap", 0o600);
        let t = text(CHILD, "k.psk").replace(
            r#""start": "initiate""#,
            r#""retransmit_tries": 2, "start": "trap""#,
        );
        let cfg = parse(&t, &dir.join("c.json")).unwrap();
        assert_eq!(cfg.peers[0].start, StartAction::Trap);
        assert_eq!(cfg.peers[0].retransmit_tries, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_static_and_unkeyed_sas_are_refused() {
        let (dir, text) = setup("sas", 0o600);
        let path = dir.join("c.json");
        let e = parse(
            &text(r#"{"outbound": "nope", "inbound": "in"}"#, "k.psk"),
            &path,
        )
        .unwrap_err();
        assert_eq!(e.field, "children[0].outbound", "{e}");
        assert!(e.problem.contains("not an SA"), "{e}");
        let e = parse(
            &text(r#"{"outbound": "in", "inbound": "out"}"#, "k.psk"),
            &path,
        )
        .unwrap_err();
        assert!(e.problem.contains("is inbound, not outbound"), "{e}");
        // An IKE-keyed SA that no peer keys would never carry traffic.
        let none = text(CHILD, "k.psk");
        let none = &none[..none.find(",\n                \"peers\"").unwrap()];
        let e = parse(&format!("{none}}}"), &path).unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("sad \"out\"", "keyed_by"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
