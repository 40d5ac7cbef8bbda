//! IKEv2 peers (`"peers"`): who keys which SAs of the policy with IKEv2
//! (RFC 7296), with a pre-shared key read from a file or with X.509
//! certificates (RFC 7427 signatures).
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
//!   "rekey_jitter_secs": 60, "liveness_secs": 30, "nat_keepalive_secs": 20,
//!   "start": "initiate",
//!   "children": [{"outbound": "a-to-b", "inbound": "b-to-a"}]
//! }]
//! ```
//!
//! `local` is one of the appliance's network addresses (IKE runs on UDP
//! 500 and 4500 there); `remote` the peer's, or `"any"` for peers whose
//! address is not known in advance (a home agent's mobile nodes, which
//! come from changing care-of addresses). An `any` peer only responds
//! (`"start": "respond"`). The `any` peers of one `local` address share
//! one IKE endpoint: IKE_AUTH picks the peer whose `remote_id` the
//! initiator proves (and whose `local_id` its IDr names, if it sends one,
//! RFC 7296 2.15, 3.5), and verifies AUTH with that peer's key or
//! certificates; an unknown identity or a failed AUTH gets
//! AUTHENTICATION_FAILED. They therefore need distinct identities and the
//! same `ike_proposals` (IKE_SA_INIT is answered before the peer is
//! known). A peer's CHILD_SA selectors (its child's SPD entries) are what
//! it is authorized to use: a request for others, such as another mobile
//! node's home address (RFC 4877 4.4), is refused with TS_UNACCEPTABLE
//! (RFC 7296 2.9). A datagram goes to the peer whose `local` and `remote`
//! are its addresses, else to the `any` peers of its local address.
//! A mobile node's peer may say
//! `"local": "care-of"`: IKE then runs from its current care-of address to
//! the home agent, whose address is `remote`, and follows its movements
//! (see `care_of.rs`). Identities are
//! `fqdn:NAME`, `ipv4:ADDR`, `ipv6:ADDR`, `keyid:HEX` or `dn:HEX` (a
//! distinguished name's DER). Proposals use
//! strongSwan's notation (`bitsgw_ike::names`). `start` is `initiate` (the
//! appliance starts the IKE SA when it starts, and again when it goes
//! down), `respond`, or `trap` (strongSwan's name: the first packet that
//! needs the peer's outbound SA starts the IKE SA, RFC 4301 acquire).
//! `retransmit_tries` is how often a request is sent again before the
//! peer is declared dead (RFC 7296 2.4; default 5, the waits doubling
//! from 1 s to at most 16 s). Each child names an outbound and an inbound SA of
//! the policy file, both `"keyed_by": "ike"` and of one mode, and is one
//! CHILD_SA of the peer's IKE SA, known by its outbound SA's name: the
//! initiator creates the first in IKE_AUTH and the others with
//! CREATE_CHILD_SA right after (RFC 7296 1.3.1); a responder answers each
//! request with the child its selectors and mode fit. The SPD entries that
//! protect with the outbound SA give the CHILD_SA's traffic selectors:
//! their addresses, protocol, and ports, ICMP type and code or Mobility
//! Header type (RFC 4301 4.4.1.1, RFC 7296 3.13.1). So a mobile node keys
//! its Binding Update / Acknowledgement SAs (transport mode, `"proto":
//! "mh"` with an `"mh_type"`) and its payload tunnel with one IKE SA, as
//! RFC 4877 has it:
//!
//! ```json
//! "children": [{"outbound": "bu-out", "inbound": "ba-in"},
//!              {"outbound": "payload-out", "inbound": "payload-in"}]
//! ```
//!
//! With a NAT between the peers (RFC 7296 2.23) IKE moves to UDP 4500 and
//! the CHILD_SAs are UDP-encapsulated (RFC 3948); the side behind the NAT
//! sends a NAT-keepalive every `nat_keepalive_secs`. A peer behind a NAT
//! is known by the NAT's public address: that is its `remote`, and its
//! SAs' tunnel address.
//!
//! `"auth"` is `"psk"` (the default) or `"certificate"`. The PSK file
//! (relative to the configuration file) holds the key, a trailing newline
//! ignored; it must not be readable by group or others. The key is never
//! logged or shown, and is zeroized when dropped.
//!
//! With certificates, a peer names PEM files (relative to the
//! configuration file) instead of `psk_file`:
//!
//! ```json
//! "auth": "certificate",
//! "certificate_file": "gw-a.pem", "private_key_file": "gw-a.key",
//! "ca_files": ["ca.pem"]
//! ```
//!
//! The certificate file's first certificate is ours, any after it are
//! intermediate CAs sent with it; the private key is a
//! PKCS#8 `PRIVATE KEY` (ECDSA P-256 or Ed25519), not readable by group or
//! others, zeroized when dropped, and must belong to the certificate. The
//! peer's certificate must chain to a certificate of `ca_files` and name
//! its identity: an `fqdn:` identity as a subjectAltName DNS name, an
//! `ipv4:`/`ipv6:` one as an IP address, a `dn:` one as its subject (a
//! `keyid:` identity is bound to no certificate and refused).

use super::raw::{Peers, ProposalNames, RawChild, RawPeer};
use super::*;
use bitsgw_ike::certs::{
    certificates_from_pem, private_key_from_pem, CredentialError, Credentials,
};
use bitsgw_ipsec::config::ListOf;
use bitsgw_ipsec::sa::{Direction, Mode as SaMode};
use zeroize::Zeroizing;

/// How a peer authenticates (both sides the same way).
#[derive(Clone)]
pub enum PeerAuth {
    /// A pre-shared key (never shown).
    Psk(Zeroizing<Vec<u8>>),
    /// Our certificate and key, and the CAs the peer's must chain to.
    Certificate(Box<Credentials>),
}

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

/// A CHILD_SA: the two SAs of the policy it keys. IKE knows it by its
/// outbound SA's name ([`ChildSettings::name`]).
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
    /// The peer's address; none for `"remote": "any"`.
    pub remote: Option<IpAddr>,
    /// Our identity, as written (`fqdn:...`).
    pub local_id: String,
    /// The peer's identity, as written.
    pub remote_id: String,
    /// The pre-shared key or certificates.
    pub auth: PeerAuth,
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
    /// NAT-keepalive interval behind a NAT (RFC 3948 2.3; default 20 s).
    pub nat_keepalive: Duration,
    /// Initiate, respond, or initiate on traffic.
    pub start: StartAction,
    /// The CHILD_SAs.
    pub children: Vec<ChildSettings>,
    /// A mobile node's peer that runs from its care-of address
    /// (`"local": "care-of"`): `local` and `remote` follow its movements.
    pub care_of: Option<super::CareOfPeer>,
    /// Whether the mobility stage moves this appliance's IKE SAs with the
    /// care-of address (the K bit, `mobility.key_management_mobility`).
    pub key_management_mobility: bool,
    /// Whether its SAs' packets cross the network inside the mobility
    /// tunnel (the `mn` and `ha` roles), which has its own UDP
    /// encapsulation through a NAT (RFC 5555 4.1).
    pub mobility_tunnel: bool,
}

impl core::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("name", &self.name)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field(
                "auth",
                match &self.auth {
                    PeerAuth::Psk(_) => &"psk <masked>",
                    PeerAuth::Certificate(_) => &"certificate",
                },
            )
            .field("start", &self.start)
            .field("children", &self.children)
            .finish_non_exhaustive()
    }
}

/// A file holding a secret (field `field`, file `shown` in `dir`),
/// refused when group or others may read it; zeroized when dropped.
fn read_secret_file(
    ctx: &Ctx<'_>,
    field: &str,
    dir: &Path,
    shown: &str,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(shown);
    let meta = std::fs::metadata(&path).map_err(|e| ctx.err(field, format!("{shown}: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ctx.err(
            field,
            format!(
                "{shown} is readable by group or others (mode {mode:03o}); {what} must be readable by its owner only (chmod 600)"
            ),
        ));
    }
    Ok(Zeroizing::new(
        std::fs::read(&path).map_err(|e| ctx.err(field, format!("{shown}: {e}")))?,
    ))
}

/// The PSK of file `shown` in `dir`: refused when group or others may read
/// it, or when shorter than 16 octets (RFC 7296 2.15 wants a key as strong
/// as the PRF's).
fn read_psk(ctx: &Ctx<'_>, dir: &Path, shown: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let mut key = read_secret_file(ctx, "psk_file", dir, shown, "a pre-shared key")?;
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

/// The peer's authentication: `"psk"` with `psk_file`, or
/// `"certificate"` with `certificate_file`, `private_key_file` and
/// `ca_files`; the fields of the other kind are refused.
fn authentication(ctx: &Ctx<'_>, p: &RawPeer, dir: &Path) -> Result<PeerAuth, ConfigError> {
    let cert_fields = [
        ("certificate_file", p.certificate_file.is_some()),
        ("private_key_file", p.private_key_file.is_some()),
        ("ca_files", p.ca_files.is_some()),
    ];
    match p.auth.as_deref().unwrap_or("psk") {
        "psk" => {
            if let Some((field, _)) = cert_fields.iter().find(|(_, given)| *given) {
                return Err(ctx.err(field, "only with \"auth\": \"certificate\""));
            }
            let file = p
                .psk_file
                .as_deref()
                .ok_or_else(|| ctx.err("psk_file", "required with \"auth\": \"psk\""))?;
            Ok(PeerAuth::Psk(read_psk(ctx, dir, file)?))
        }
        "certificate" => {
            if p.psk_file.is_some() {
                return Err(ctx.err("psk_file", "only with \"auth\": \"psk\""));
            }
            if p.remote_id.starts_with("keyid:") {
                return Err(ctx.err(
                    "remote_id",
                    "a key ID is bound to no certificate; use fqdn:, ipv4: or ipv6:",
                ));
            }
            let required = |field: &str, v: &Option<String>| {
                v.clone()
                    .ok_or_else(|| ctx.err(field, "required with \"auth\": \"certificate\""))
            };
            let cert_file = required("certificate_file", &p.certificate_file)?;
            let key_file = required("private_key_file", &p.private_key_file)?;
            let ca_files = p
                .ca_files
                .as_ref()
                .map(|l| l.0.clone())
                .filter(|l| !l.is_empty())
                .ok_or_else(|| ctx.err("ca_files", "must list at least one CA certificate file"))?;
            let read_certs = |field: &str, shown: &str| {
                let text = std::fs::read(dir.join(shown))
                    .map_err(|e| ctx.err(field, format!("{shown}: {e}")))?;
                certificates_from_pem(&text).map_err(|e| ctx.err(field, format!("{shown}: {e}")))
            };
            // Ours first, then intermediate CAs to send with it.
            let mut chain = read_certs("certificate_file", &cert_file)?;
            let intermediates = chain.split_off(chain.len().min(1));
            let certificate = chain.pop().unwrap_or_default();
            let pem = read_secret_file(ctx, "private_key_file", dir, &key_file, "a private key")?;
            let key = private_key_from_pem(&pem)
                .map_err(|e| ctx.err("private_key_file", format!("{key_file}: {e}")))?;
            let mut cas = Vec::new();
            for (j, f) in ca_files.iter().enumerate() {
                cas.extend(read_certs(&format!("ca_files[{j}]"), f)?);
            }
            let creds = Credentials::new(certificate, key, cas).map_err(|e| match e {
                CredentialError::Ca { .. } | CredentialError::NoCa => {
                    ctx.err("ca_files", e.to_string())
                }
                e => ctx.err(
                    "certificate_file",
                    format!("{cert_file} with {key_file}: {e}"),
                ),
            })?;
            let creds = creds
                .with_intermediates(intermediates)
                .map_err(|e| ctx.err("certificate_file", format!("{cert_file}: {e}")))?;
            Ok(PeerAuth::Certificate(Box::new(creds)))
        }
        other => Err(ctx.err(
            "auth",
            format!("{} is not psk or certificate", Shown(other)),
        )),
    }
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
    mobility: Option<&MobilitySettings>,
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
        let mut settings = peer(&ctx, p, dir, policy, network, mobility, &out, &mut keyed)?;
        settings.key_management_mobility =
            super::mobility_settings::key_management_mobility(mobility);
        settings.mobility_tunnel = mobility.is_some();
        out.push(settings);
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
#[allow(clippy::too_many_arguments)] // the configuration it is checked against
fn peer(
    ctx: &Ctx<'_>,
    p: RawPeer,
    dir: &Path,
    policy: &PolicySet,
    network: &OwnAddresses,
    mobility: Option<&MobilitySettings>,
    others: &[PeerSettings],
    keyed: &mut Vec<String>,
) -> Result<PeerSettings, ConfigError> {
    if others.iter().any(|o| o.name == p.name) {
        return Err(ctx.err("name", "another peer has this name"));
    }
    let addr = |field: &str, s: &str| resolve_addr(ctx, field, s, &policy.addresses);
    let (local, remote, care_of) = match p.local.as_str() {
        "care-of" => {
            let (l, r, c) =
                super::care_of::care_of_peer(ctx, addr("remote", &p.remote)?, mobility, network)?;
            (l, Some(r), Some(c))
        }
        local => {
            let remote = match p.remote.as_str() {
                "any" => None,
                s => Some(addr("remote", s)?),
            };
            (addr("local", local)?, remote, None)
        }
    };
    if care_of.is_none() && !network.addresses.iter().any(|(a, _)| *a == local) {
        return Err(ctx.err(
            "local",
            format!("{local} is not one of the appliance's network addresses (addresses.network)"),
        ));
    }
    if care_of.is_none() && remote.is_some_and(|r| local.is_ipv4() != r.is_ipv4()) {
        return Err(ctx.err("remote", "local and remote must be of one address family"));
    }
    if remote.is_some()
        && others
            .iter()
            .any(|o| o.remote == remote && o.local == local)
    {
        return Err(ctx.err("remote", "another peer has these addresses"));
    }
    for (field, id) in [("local_id", &p.local_id), ("remote_id", &p.remote_id)] {
        bitsgw_ike::names::identity(id).map_err(|e| ctx.err(field, e))?;
    }
    let auth = authentication(ctx, &p, dir)?;
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
    if remote.is_none() {
        any_peer(
            ctx,
            (&p.local_id, &p.remote_id),
            local,
            start,
            &ike_proposals,
            others,
        )?;
    }
    let children_given = p
        .children
        .ok_or_else(|| ctx.err("children", "must be a list of children"))?
        .0;
    if children_given.is_empty() {
        return Err(ctx.err(
            "children",
            "must name at least one child (an outbound and an inbound SA)",
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
        auth,
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
        nat_keepalive: secs(ctx, p.nat_keepalive_secs, "nat_keepalive_secs")?
            .unwrap_or(Duration::from_secs(20)),
        start,
        children,
        care_of,
        key_management_mobility: false,
        mobility_tunnel: false,
    })
}

/// What a `"remote": "any"` peer must be: a responder (no address to
/// initiate to), and, sharing one IKE endpoint with the other `any` peers
/// of its `local` address, told apart from them by its identities and
/// accepting the same IKE proposals (IKE_SA_INIT is answered before
/// IKE_AUTH names the peer).
fn any_peer(
    ctx: &Ctx<'_>,
    (local_id, remote_id): (&str, &str),
    local: IpAddr,
    start: StartAction,
    ike_proposals: &[String],
    others: &[PeerSettings],
) -> Result<(), ConfigError> {
    if start != StartAction::Respond {
        return Err(ctx.err(
            "start",
            format!(
                "{} needs the peer's address; a peer with \"remote\": \"any\" only responds (\"start\": \"respond\")",
                Shown(start.name())
            ),
        ));
    }
    let mut sharing = others
        .iter()
        .filter(|o| o.remote.is_none() && o.local == local);
    if let Some(o) = sharing
        .clone()
        .find(|o| o.local_id == local_id && o.remote_id == remote_id)
    {
        return Err(ctx.err(
            "remote_id",
            format!(
                "peer {} on this local address has the same identities; \"any\" peers are told apart by them",
                Shown(&o.name)
            ),
        ));
    }
    match sharing.next() {
        Some(first) if first.ike_proposals != ike_proposals => Err(ctx.err(
            "ike_proposals",
            format!(
                "must be those of peer {}: the \"any\" peers of one local address share an IKE endpoint, which answers IKE_SA_INIT before it knows the peer",
                Shown(&first.name)
            ),
        )),
        _ => Ok(()),
    }
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

impl ChildSettings {
    /// The child's name in IKE: its outbound SA's, which no other child
    /// keys.
    pub fn name(&self) -> &str {
        &self.outbound
    }
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
        let PeerAuth::Psk(psk) = &p.auth else {
            panic!("{p:?}")
        };
        assert_eq!(&psk[..], b"a sixteen-octet or longer key");
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
        let (entry, field, problem) = at(text(CHILD, "k.psk").replace(
            r#""start": "initiate""#,
            r#""nat_keepalive_secs": 0, "start": "initiate""#,
        ));
        assert_eq!(
            (&entry, field.as_str(), problem.as_str()),
            (&peer, "nat_keepalive_secs", "must not be zero")
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
    fn a_peer_without_children_is_refused() {
        let (dir, text) = setup("nochild", 0o600);
        let e = parse(&text("", "k.psk"), &dir.join("c.json")).unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("peers[0] \"b\"", "children")
        );
        assert!(e.problem.contains("at least one child"), "{e}");
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

    /// A CA and a certificate for a.example with its key, as PEM files in
    /// `dir` (ca.pem, a.pem, a.key of `key_mode`), and a second key
    /// (other.key) that is not the certificate's.
    fn write_certificates(dir: &Path, key_mode: u32) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let other = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("a.pem"), cert.pem()).unwrap();
        for (name, k) in [("a.key", &key), ("other.key", &other)] {
            std::fs::write(dir.join(name), k.serialize_pem()).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(key_mode))
                .unwrap();
        }
    }

    const CERT_AUTH: &str = r#""auth": "certificate", "certificate_file": "a.pem", "private_key_file": "a.key", "ca_files": ["ca.pem"]"#;

    /// The configuration of `setup` with `auth` in place of the PSK file.
    fn with_auth(text: &dyn Fn(&str, &str) -> String, auth: &str) -> String {
        text(CHILD, "k.psk").replace(r#""psk_file": "k.psk""#, auth)
    }

    #[test]
    fn a_certificate_peer_reads_its_pem_files_and_its_key_stays_masked() {
        let (dir, text) = setup("cert", 0o600);
        write_certificates(&dir, 0o600);
        let cfg = parse(&with_auth(&text, CERT_AUTH), &dir.join("c.json")).unwrap();
        let PeerAuth::Certificate(c) = &cfg.peers[0].auth else {
            panic!("{cfg:?}")
        };
        assert_eq!(c.key().kind(), bitsgw_ike::certs::KeyKind::Ed25519);
        assert_eq!(c.intermediates().count(), 0);
        let key_pem = std::fs::read_to_string(dir.join("a.key")).unwrap();
        let key_b64: String = key_pem.lines().nth(1).unwrap().to_string();
        assert!(!format!("{cfg:?}").contains(&key_b64));
        assert!(format!("{c:?}").contains("pkcs8: \"<masked>\""), "{c:?}");
        // Certificates after ours are intermediates, sent with it.
        let mut pem = std::fs::read_to_string(dir.join("a.pem")).unwrap();
        pem += &std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        std::fs::write(dir.join("a.pem"), pem).unwrap();
        let cfg = parse(&with_auth(&text, CERT_AUTH), &dir.join("c.json")).unwrap();
        let PeerAuth::Certificate(c) = &cfg.peers[0].auth else {
            panic!("{cfg:?}")
        };
        assert_eq!(c.intermediates().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn certificate_settings_are_refused_naming_file_entry_and_field() {
        let (dir, text) = setup("certbad", 0o600);
        write_certificates(&dir, 0o600);
        let path = dir.join("c.json");
        let at = |t: String| {
            let e = parse(&t, &path).unwrap_err();
            assert_eq!(e.file, path, "{e}");
            assert_eq!(e.entry, "peers[0] \"b\"", "{e}");
            (e.field, e.problem)
        };
        let (field, problem) = at(with_auth(
            &text,
            &CERT_AUTH.replace("a.key\"", "other.key\""),
        ));
        assert_eq!(field, "certificate_file");
        assert!(problem.contains("does not belong"), "{problem}");
        let (field, _) = at(with_auth(
            &text,
            &CERT_AUTH.replace(r#", "ca_files": ["ca.pem"]"#, ""),
        ));
        assert_eq!(field, "ca_files");
        let (field, problem) = at(with_auth(&text, &CERT_AUTH.replace("ca.pem", "a.key")));
        assert_eq!(field, "ca_files[0]");
        assert!(
            problem.contains("a.key") && problem.contains("CERTIFICATE"),
            "{problem}"
        );
        let (field, problem) = at(with_auth(
            &text,
            &CERT_AUTH.replace("\"a.pem\"", "\"nope.pem\""),
        ));
        assert_eq!(field, "certificate_file");
        assert!(problem.contains("nope.pem"), "{problem}");
        let (field, _) = at(with_auth(
            &text,
            &format!(r#"{CERT_AUTH}, "psk_file": "k.psk""#),
        ));
        assert_eq!(field, "psk_file");
        let (field, _) = at(text(CHILD, "k.psk").replace(
            r#""psk_file": "k.psk""#,
            r#""psk_file": "k.psk", "ca_files": ["ca.pem"]"#,
        ));
        assert_eq!(field, "ca_files");
        let (field, problem) = at(with_auth(
            &text,
            &CERT_AUTH.replace("certificate\"", "rsa\""),
        ));
        assert_eq!(field, "auth");
        assert!(problem.contains("not psk or certificate"), "{problem}");
        let (field, _) = at(with_auth(&text, CERT_AUTH).replace("fqdn:b.example", "keyid:0102"));
        assert_eq!(field, "remote_id");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_private_key_file_readable_by_others_is_refused() {
        let (dir, text) = setup("certmode", 0o600);
        write_certificates(&dir, 0o640);
        let e = parse(&with_auth(&text, CERT_AUTH), &dir.join("c.json")).unwrap_err();
        assert_eq!(e.field, "private_key_file", "{e}");
        assert!(
            e.problem.contains("a.key") && e.problem.contains("640"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
