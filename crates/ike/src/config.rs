//! What an IKE endpoint is configured with: identities, the pre-shared
//! key or certificates, proposals, selectors, mode, timers.
//! [`EndpointConfig::validate`] names the field at fault.

use crate::certs::Credentials;
use crate::crypto::Secret;
use crate::suite::{EspProposal, IkeProposal};
use crate::wire::{IdPayload, IdType, TrafficSelector};
use core::time::Duration;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IKE identity (RFC 7296 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// ID_FQDN.
    Fqdn(String),
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_KEY_ID: opaque octets.
    KeyId(Vec<u8>),
    /// ID_DER_ASN1_DN: a distinguished name, DER as in a certificate's
    /// subject (compared octet for octet).
    Dn(Vec<u8>),
}

impl Identity {
    /// The ID payload for it.
    pub fn to_payload(&self) -> IdPayload {
        let (id_type, data) = match self {
            Identity::Fqdn(s) => (IdType::Fqdn, s.as_bytes().to_vec()),
            Identity::Ipv4(a) => (IdType::Ipv4Addr, a.octets().to_vec()),
            Identity::Ipv6(a) => (IdType::Ipv6Addr, a.octets().to_vec()),
            Identity::KeyId(k) => (IdType::KeyId, k.clone()),
            Identity::Dn(d) => (IdType::DerAsn1Dn, d.clone()),
        };
        IdPayload { id_type, data }
    }

    /// Whether a received ID payload names this identity (FQDNs compare
    /// without regard to case, RFC 7296 3.5 leaves matching to policy).
    pub fn matches(&self, id: &IdPayload) -> bool {
        match self {
            Identity::Fqdn(s) => {
                id.id_type == IdType::Fqdn && id.data.eq_ignore_ascii_case(s.as_bytes())
            }
            _ => *id == self.to_payload(),
        }
    }
}

/// How the peers authenticate each other (both the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// A pre-shared key (RFC 7296 2.15, AUTH method 2).
    Psk(Secret),
    /// Digital signatures (RFC 7427, AUTH method 14) with X.509
    /// certificates: ours, our key, and the CAs the peer's must chain to.
    Certificate(Box<Credentials>),
}

/// CHILD_SA encapsulation mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tunnel mode (the default, RFC 7296 1.3.1).
    Tunnel,
    /// Transport mode, asked for with USE_TRANSPORT_MODE.
    Transport,
}

/// Lifetimes: an SA is rekeyed when its lifetime ends (RFC 7296 2.8), up
/// to `jitter` earlier at random so that two peers with the same settings
/// rarely rekey at once (2.8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// IKE SA lifetime: the time until it is rekeyed.
    pub ike: Duration,
    /// CHILD_SA lifetime: the time until it is rekeyed.
    pub child: Duration,
    /// How much earlier, at most, a rekey may start.
    pub jitter: Duration,
}

impl Lifetimes {
    /// The hard lifetime that goes with a rekey `lifetime`: a tenth
    /// longer (strongSwan's default margin). IKEv2 negotiates no
    /// lifetimes (RFC 7296 2.8: each end keeps its own policy), but an SA
    /// may not be used beyond its lifetime (RFC 4301 4.4.2.1): an SA whose
    /// rekeys kept failing, refused or unanswered, is deleted at this
    /// time, and its traffic is dropped until a new one is made.
    pub fn hard(lifetime: Duration) -> Duration {
        lifetime.saturating_add(lifetime / 10)
    }
}

/// Retransmission of requests (RFC 7296 2.1, 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Time before the first retransmission; doubled each time.
    pub initial: Duration,
    /// The longest wait between two transmissions.
    pub max_interval: Duration,
    /// Retransmissions before the peer is declared dead.
    pub tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        Retransmit {
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(16),
            tries: 5,
        }
    }
}

/// One CHILD_SA a peer keys: its selectors and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// Its name, unique within the peer (carried by CHILD_SA events).
    pub name: String,
    /// Our side's traffic selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport.
    pub mode: Mode,
}

/// One peer: who we are, whom we accept, how to protect what.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The connection's name (carried by CHILD_SA events).
    pub name: String,
    /// Our identity.
    pub local_id: Identity,
    /// The identity the peer must prove.
    pub remote_id: Identity,
    /// The pre-shared key or certificates.
    pub auth: Authentication,
    /// IKE SA proposals, preferred first.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals, preferred first.
    pub esp_proposals: Vec<EspProposal>,
    /// The CHILD_SAs to key, each with its own selectors and mode: the
    /// initiator creates the first in IKE_AUTH and the others with
    /// CREATE_CHILD_SA (RFC 7296 1.3.1); the responder answers each
    /// request with the one its selectors fit.
    pub children: Vec<ChildConfig>,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Send an empty INFORMATIONAL when nothing was heard for this long
    /// (RFC 7296 2.4); none disables liveness checks.
    pub liveness: Option<Duration>,
    /// Behind a NAT, send a NAT-keepalive this often to keep its mapping
    /// (RFC 3948 2.3, 20 s there); none sends none.
    pub nat_keepalive: Option<Duration>,
    /// Retransmission timers.
    pub retransmit: Retransmit,
    /// Send INITIAL_CONTACT in IKE_AUTH (RFC 7296 2.4).
    pub initial_contact: bool,
}

/// An endpoint: one peer configuration and the responder's limits.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The peer.
    pub peer: PeerConfig,
    /// Half-open IKE SAs (responder, after IKE_SA_INIT) from which on
    /// cookies are required (RFC 7296 2.6).
    pub cookie_threshold: usize,
    /// Half-open IKE SAs beyond which new IKE_SA_INIT requests are dropped
    /// (memory stays bounded even with valid cookies).
    pub max_half_open: usize,
    /// How long a half-open IKE SA waits for IKE_AUTH.
    pub half_open_timeout: Duration,
}

/// A configuration error naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer}: {field}: {reason}")]
pub struct ConfigError {
    /// The peer's name.
    pub peer: String,
    /// The field, e.g. `esp_proposals[0].integrity`.
    pub field: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl EndpointConfig {
    /// Checks every field; the first fault found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.peer;
        let err = |field: String, reason| ConfigError {
            peer: p.name.clone(),
            field,
            reason,
        };
        if let Authentication::Psk(psk) = &p.auth {
            if psk.len() < 16 {
                return Err(err("psk".into(), "shorter than 16 octets"));
            }
        }
        if let (Authentication::Certificate(_), Identity::KeyId(_)) = (&p.auth, &p.remote_id) {
            return Err(err(
                "remote_id".into(),
                "a key ID is not bound to a certificate",
            ));
        }
        if p.ike_proposals.is_empty() {
            return Err(err("ike_proposals".into(), "empty"));
        }
        for (i, ike) in p.ike_proposals.iter().enumerate() {
            let f = |s: &str| format!("ike_proposals[{i}].{s}");
            if ike.encryption.is_empty() {
                return Err(err(f("encryption"), "empty"));
            }
            if ike.prf.is_empty() {
                return Err(err(f("prf"), "empty"));
            }
            if ike.groups.is_empty() {
                return Err(err(f("groups"), "empty"));
            }
            check_integrity(&ike.encryption, &ike.integrity).map_err(|r| err(f("integrity"), r))?;
        }
        if p.esp_proposals.is_empty() {
            return Err(err("esp_proposals".into(), "empty"));
        }
        for (i, esp) in p.esp_proposals.iter().enumerate() {
            let f = |s: &str| format!("esp_proposals[{i}].{s}");
            if esp.encryption.is_empty() {
                return Err(err(f("encryption"), "empty"));
            }
            check_integrity(&esp.encryption, &esp.integrity).map_err(|r| err(f("integrity"), r))?;
        }
        check_children(&p.children).map_err(|(field, reason)| err(field, reason))?;
        if p.lifetimes.jitter >= p.lifetimes.ike.min(p.lifetimes.child) {
            return Err(err(
                "lifetimes.jitter".into(),
                "not shorter than the IKE and CHILD_SA lifetimes",
            ));
        }
        if p.retransmit.initial.is_zero() {
            return Err(err("retransmit.initial".into(), "zero"));
        }
        if self.max_half_open == 0 {
            return Err(ConfigError {
                peer: p.name.clone(),
                field: "max_half_open".into(),
                reason: "zero",
            });
        }
        Ok(())
    }
}

/// At least one child, names unique, selectors that select something.
fn check_children(children: &[ChildConfig]) -> Result<(), (String, &'static str)> {
    if children.is_empty() {
        return Err(("children".into(), "empty"));
    }
    for (j, c) in children.iter().enumerate() {
        if children[..j].iter().any(|o| o.name == c.name) {
            return Err((format!("children[{j}].name"), "another child has this name"));
        }
        for (name, list) in [("local_ts", &c.local_ts), ("remote_ts", &c.remote_ts)] {
            if list.is_empty() {
                return Err((format!("children[{j}].{name}"), "empty"));
            }
            if let Some(i) = list.iter().position(TrafficSelector::is_empty) {
                return Err((format!("children[{j}].{name}[{i}]"), "selects nothing"));
            }
        }
    }
    Ok(())
}

/// AEADs take no integrity transform and the others need one (RFC 5282 8),
/// so a proposal never mixes the two kinds.
fn check_integrity(
    encryption: &[crate::suite::Encryption],
    integrity: &[crate::suite::Integrity],
) -> Result<(), &'static str> {
    let aead = encryption.iter().filter(|e| e.is_aead()).count();
    if aead != 0 && aead != encryption.len() {
        return Err("AEAD and non-AEAD ciphers in one proposal");
    }
    match (aead != 0, integrity.is_empty()) {
        (true, false) => Err("an AEAD proposal takes no integrity transform"),
        (false, true) => Err("AES-CBC needs an integrity transform"),
        _ => Ok(()),
    }
}
