//! The IKEv2 state machine in quinn-proto's sans-IO shape: datagrams and
//! `now` in ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`]),
//! datagrams, events and the next deadline out ([`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], [`Endpoint::poll_timeout`]). No clock, socket
//! or thread inside; randomness comes from the operating system through
//! ring.
//!
//! Exchanges: IKE_SA_INIT (RFC 7296 1.2, with COOKIE 2.6, INVALID_KE_PAYLOAD
//! 1.2, NAT detection 2.23), IKE_AUTH with a pre-shared key (2.15) or
//! certificates and digital signatures (RFC 7427) and the
//! first CHILD_SA (1.3.1 transport mode, 2.9 selector narrowing, 2.4
//! INITIAL_CONTACT), CREATE_CHILD_SA for a peer's other children and for
//! rekeys (1.3.1, 1.3.2, 1.3.3), INFORMATIONAL (1.4: Delete of CHILD_SAs
//! and of the IKE SA; 2.4 liveness). Each side keeps a window of one request (2.3);
//! requests are retransmitted with exponential backoff until given up
//! (2.1, 2.4), and a retransmitted request gets the cached response.

mod auth;
mod child;
mod init;
mod messages;
mod rekey;
mod timers;

use crate::certs::{
    signature_auth_data, AuthFailure, AUTH_DIGITAL_SIGNATURE, AUTH_ECDSA_P256, CERT_X509_SIGNATURE,
    SUPPORTED_HASHES,
};
use crate::config::{
    Authentication, ChildConfig, ConfigError, EndpointConfig, Lifetimes, Mode, PeerConfig,
};
use crate::crypto::{
    cookie, ct_eq, derive_child_keys, derive_ike_keys, derive_rekeyed_ike_keys, nat_detection_hash,
    psk_auth, signed_octets, CryptoError, DhPrivate, IkeKeys, Secret, SkKeys,
};
use crate::event::{
    ChildSaEstablished, Counters, DownReason, DropReason, Event, IkeSaId, Transmit, NAT_KEEPALIVE,
};
use crate::suite::{
    accept_esp_reply, accept_ike_reply, accept_ike_reply_with_spi, esp_reply, ike_reply,
    select_esp, select_ike, select_ike_with_spi, DhGroup, EspProposal, EspSuite, IkeSuite, Pfs,
};
use crate::wire::{
    chain_len, emit_chain, parse_chain, AuthPayload, CertPayload, DeletePayload, ExchangeType,
    Flags, Header, HeaderRepr, IdPayload, KePayload, Message, NotifyPayload, NotifyType, Payload,
    PayloadType, ProtocolId, SaPayload, TrafficSelector, WireError,
};
use bitsgw_wire::Timestamp;
use core::time::Duration;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// AUTH method 2: Shared Key Message Integrity Code (RFC 7296 3.8).
const AUTH_PSK: u8 = 2;
/// Nonce octets we send: at least half the PRF's key size (RFC 7296 2.10).
const NONCE_LEN: usize = 32;
/// COOKIE answers followed before giving up (a responder that keeps
/// asking is broken or hostile).
const MAX_COOKIE_ROUNDS: u8 = 3;
/// How long after a failed CHILD_SA rekey it is tried again.
const REKEY_RETRY: Duration = Duration::from_secs(30);
/// Protocol ID of an IKE SA in Delete and Notify payloads.
const PROTO_IKE: u8 = 1;
/// Protocol ID of ESP.
const PROTO_ESP: u8 = 3;
/// IKE's port.
const IKE_PORT: u16 = 500;
/// IKE and ESP behind a NAT (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// Errors of the calls an owner makes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IkeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No peer configuration of this name.
    #[error("no peer named {0:?}")]
    UnknownPeer(String),
    /// No IKE SA with this ID.
    #[error("no IKE SA {0:?}")]
    UnknownIkeSa(IkeSaId),
    /// The IKE SA is not established.
    #[error("IKE SA {0:?} is not established")]
    NotEstablished(IkeSaId),
    /// No CHILD_SA with this inbound SPI.
    #[error("no CHILD_SA with inbound SPI {0:#010x}")]
    UnknownChildSa(u32),
    /// No child configuration of this name.
    #[error("no child configuration named {0:?}")]
    UnknownChild(String),
    /// A cryptographic step failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A message could not be built.
    #[error(transparent)]
    Wire(#[from] WireError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    HalfOpen,
    /// Authenticated.
    Established,
    /// Our Delete of the IKE SA is outstanding.
    Deleting,
    /// Responder: IKE_AUTH refused; kept only so that a retransmission of
    /// it gets the same answer (RFC 7296 2.1), until it expires.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RequestKind {
    Init,
    Auth,
    Liveness,
    /// Deleting our CHILD_SA with this inbound SPI.
    DeleteChild(u32),
    DeleteIke,
    /// CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 1.3.2) with our new
    /// SPI `spi` and nonce `ni` (the Diffie-Hellman key is in the IKE SA).
    RekeyIke {
        spi: u64,
        ni: Vec<u8>,
    },
    /// CREATE_CHILD_SA for a CHILD_SA of child configuration `child`
    /// (RFC 7296 1.3.1), rekeying the one with inbound SPI `old` if any
    /// (1.3.3), as asked here.
    CreateChild {
        child: String,
        old: Option<u32>,
        inbound_spi: u32,
        ni: Vec<u8>,
        mode: Mode,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    },
}

#[derive(Debug)]
struct Pending {
    message_id: u32,
    exchange: ExchangeType,
    kind: RequestKind,
    bytes: Vec<u8>,
    retransmits: u32,
    interval: Duration,
    next_at: Timestamp,
}

#[derive(Debug, Clone)]
struct ChildSa {
    /// The child configuration it keys.
    child: String,
    inbound_spi: u32,
    outbound_spi: u32,
    mode: Mode,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// When to rekey it (its configured lifetime).
    rekey_at: Timestamp,
    /// When it is deleted if not rekeyed by then ([`Lifetimes::hard`]).
    hard_at: Timestamp,
    /// Our Delete of it is outstanding.
    deleting: bool,
    /// The nonces of the peer's CREATE_CHILD_SA that rekeyed it, for
    /// telling which of two simultaneous rekeys wins (RFC 7296 2.8.1).
    rekeyed_by_peer: Option<(Vec<u8>, Vec<u8>)>,
}

/// What we asked for in a request creating a CHILD_SA.
#[derive(Debug)]
struct Asked<'a> {
    child: String,
    inbound_spi: u32,
    mode: Mode,
    local_ts: &'a [TrafficSelector],
    remote_ts: &'a [TrafficSelector],
    ni: Vec<u8>,
    rekeys: Option<u32>,
    /// How to read Diffie-Hellman transforms, and our key for PFS.
    pfs: Pfs,
    dh: Option<DhPrivate>,
}

/// A CHILD_SA just negotiated, before its keys are derived.
#[derive(Debug)]
struct NewChild {
    /// The child configuration it keys.
    child: String,
    inbound_spi: u32,
    outbound_spi: u32,
    suite: EspSuite,
    mode: Mode,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// The nonces of the exchange that made it, its initiator's first.
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The fresh Diffie-Hellman secret with PFS (RFC 7296 2.17).
    shared: Option<Secret>,
    /// Whether we initiated that exchange: KEYMAT's first keys protect
    /// what its initiator sends (RFC 7296 2.17).
    exchange_initiator: bool,
    /// The inbound SPI of the CHILD_SA it replaces.
    rekeys: Option<u32>,
}

#[derive(Debug)]
struct IkeSa {
    /// The SPI we chose.
    id: u64,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    state: State,
    group: DhGroup,
    dh: Option<DhPrivate>,
    suite: Option<IkeSuite>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// RealMessage1 and RealMessage2 of RFC 7296 2.15.
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    cookie: Option<Vec<u8>>,
    cookie_rounds: u8,
    keys: Option<IkeKeys>,
    sk_out: Option<SkKeys>,
    sk_in: Option<SkKeys>,
    next_message_id: u32,
    pending: Option<Pending>,
    queued: VecDeque<(ExchangeType, Vec<Payload>, RequestKind)>,
    /// The message ID of the peer's next request.
    peer_message_id: u32,
    last_response: Option<(u32, Vec<u8>)>,
    children: Vec<ChildSa>,
    first_child_spi: u32,
    /// Child configurations we initiate that have no CHILD_SA (yet), and
    /// when to request each: the ones after the first right after
    /// IKE_AUTH, a failed one again later (RFC 7296 1.3.1).
    missing_children: Vec<(String, Timestamp)>,
    created: Timestamp,
    /// When the last NAT-keepalive left (or the IKE SA was made).
    keepalive_sent: Timestamp,
    last_heard: Timestamp,
    nat_local: bool,
    nat_remote: bool,
    /// Whether the owner knows of it (it initiated it or saw it come up),
    /// so its end is reported.
    announced: bool,
    /// When to rekey it (its configured lifetime).
    rekey_at: Timestamp,
    /// When it is deleted if not rekeyed by then ([`Lifetimes::hard`]).
    hard_at: Timestamp,
    /// Our Diffie-Hellman keys of outstanding rekeys (of the IKE SA, or of
    /// CHILD_SAs with PFS), by the nonce of their request.
    pending_dh: Vec<(Vec<u8>, DhPrivate)>,
    /// Replaced by a rekey, or made by one not (yet) in use: dropped at
    /// this time if not deleted by then.
    expire_at: Option<Timestamp>,
    /// The IKE SA the peer's rekey made while ours was outstanding, and
    /// the nonces of that exchange (RFC 7296 2.8.2).
    collision: Option<(u64, Vec<u8>, Vec<u8>)>,
    /// The peer sent SIGNATURE_HASH_ALGORITHMS in IKE_SA_INIT (RFC 7427
    /// 4), so it takes AUTH method 14.
    peer_rfc7427: bool,
    /// Its peer configuration, an index into [`Endpoint::peers`]: the
    /// first until a responder learns from IKE_AUTH whom it serves.
    peer: usize,
}

impl IkeSa {
    /// An IKE SA with nothing negotiated yet: no keys, no nonces, message
    /// IDs at zero, not known to the owner.
    fn new(
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        (local, remote): (SocketAddr, SocketAddr),
        state: State,
        group: DhGroup,
        now: Timestamp,
    ) -> IkeSa {
        IkeSa {
            id: if initiator { spi_i } else { spi_r },
            initiator,
            spi_i,
            spi_r,
            local,
            remote,
            state,
            group,
            dh: None,
            suite: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            cookie_rounds: 0,
            keys: None,
            sk_out: None,
            sk_in: None,
            next_message_id: 0,
            pending: None,
            queued: VecDeque::new(),
            peer_message_id: 0,
            last_response: None,
            children: Vec::new(),
            first_child_spi: 0,
            missing_children: Vec::new(),
            created: now,
            keepalive_sent: now,
            last_heard: now,
            nat_local: false,
            nat_remote: false,
            announced: false,
            rekey_at: Timestamp(u64::MAX),
            hard_at: Timestamp(u64::MAX),
            pending_dh: Vec::new(),
            expire_at: None,
            collision: None,
            peer_rfc7427: false,
            peer: 0,
        }
    }
}

/// What a handler wants done with the IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Keep,
    Remove,
}

#[derive(Debug, Default)]
struct Out {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl Out {
    fn drop(&mut self, reason: DropReason) {
        *self.counters.drops.entry(reason).or_default() += 1;
    }

    fn send(&mut self, sa: &IkeSa, contents: Vec<u8>) {
        self.transmits.push_back(Transmit {
            remote: sa.remote,
            local: sa.local,
            contents,
        });
    }

    fn count_notifies_received(&mut self, payloads: &[Payload]) {
        for p in payloads {
            if let Payload::Notify(n) = p {
                *self
                    .counters
                    .notify_received
                    .entry(n.notify_type)
                    .or_default() += 1;
            }
        }
    }

    fn count_notifies_sent(&mut self, payloads: &[Payload]) {
        for p in payloads {
            if let Payload::Notify(n) = p {
                *self.counters.notify_sent.entry(n.notify_type).or_default() += 1;
            }
        }
    }

    fn child_deleted(&mut self, ike: u64, name: &str, c: &ChildSa) {
        self.events.push_back(Event::ChildSaDeleted {
            ike: IkeSaId(ike),
            name: name.to_string(),
            child: c.child.clone(),
            inbound_spi: c.inbound_spi,
            outbound_spi: c.outbound_spi,
        });
    }

    /// Reports an IKE SA's end: its CHILD_SAs first, then the IKE SA.
    fn close(&mut self, sa: &mut IkeSa, name: &str, reason: DownReason) {
        for c in sa.children.drain(..) {
            self.child_deleted(sa.id, name, &c);
        }
        if sa.announced {
            self.events.push_back(Event::IkeSaDown {
                ike: IkeSaId(sa.id),
                reason,
            });
        }
    }
}

/// An IKEv2 endpoint for one or more peer configurations, initiator and
/// responder. Peers sharing an endpoint are told apart by the identity
/// the initiator proves in IKE_AUTH (see [`Endpoint::add_peer`]).
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint-wide limits; its `peer` is `peers[0]`.
    config: EndpointConfig,
    /// The peer configurations, the one the endpoint was made with first.
    peers: Vec<PeerConfig>,
    rng: SystemRandom,
    sas: HashMap<u64, IkeSa>,
    /// Responder SAs by (peer address, initiator SPI), so a retransmitted
    /// IKE_SA_INIT finds its cached answer (RFC 7296 2.1).
    by_initiator: HashMap<(SocketAddr, u64), u64>,
    cookie_secret: Secret,
    out: Out,
    /// Wall-clock time (since the Unix epoch) as last given by the owner,
    /// for certificates' validity.
    wall_clock: Option<Duration>,
}

fn find_notify(payloads: &[Payload], t: NotifyType) -> Option<&NotifyPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type == t => Some(n),
        _ => None,
    })
}

fn first_error(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type.is_error() => Some(n.notify_type),
        _ => None,
    })
}

/// The first payload of each kind a message carries.
#[derive(Debug, Default)]
struct Found<'a> {
    sa: Option<&'a SaPayload>,
    ke: Option<&'a KePayload>,
    nonce: Option<&'a Vec<u8>>,
    idi: Option<&'a IdPayload>,
    idr: Option<&'a IdPayload>,
    auth: Option<&'a AuthPayload>,
    tsi: Option<&'a Vec<TrafficSelector>>,
    tsr: Option<&'a Vec<TrafficSelector>>,
}

impl<'a> Found<'a> {
    fn of(payloads: &'a [Payload]) -> Found<'a> {
        let mut f = Found::default();
        for p in payloads {
            match p {
                Payload::Sa(x) => f.sa = f.sa.or(Some(x)),
                Payload::Ke(x) => f.ke = f.ke.or(Some(x)),
                Payload::Nonce(x) => f.nonce = f.nonce.or(Some(x)),
                Payload::IdI(x) => f.idi = f.idi.or(Some(x)),
                Payload::IdR(x) => f.idr = f.idr.or(Some(x)),
                Payload::Auth(x) => f.auth = f.auth.or(Some(x)),
                Payload::TsI(x) => f.tsi = f.tsi.or(Some(x)),
                Payload::TsR(x) => f.tsr = f.tsr.or(Some(x)),
                _ => {}
            }
        }
        f
    }
}

fn notify(t: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::new(t, data))
}

/// The notification refusing an authentic request whose payloads did not
/// parse: UNSUPPORTED_CRITICAL_PAYLOAD naming the type (RFC 7296 2.5), or
/// INVALID_SYNTAX.
fn refusal(e: WireError) -> Payload {
    match e {
        WireError::UnsupportedCritical(t) => {
            notify(NotifyType::UnsupportedCriticalPayload, vec![t])
        }
        _ => notify(NotifyType::InvalidSyntax, Vec::new()),
    }
}

/// Errors about a CHILD_SA only: the IKE SA stays (RFC 7296 2.21.3).
fn is_child_error(t: NotifyType) -> bool {
    matches!(
        t,
        NotifyType::NoProposalChosen
            | NotifyType::TsUnacceptable
            | NotifyType::SinglePairRequired
            | NotifyType::InvalidSelectors
            | NotifyType::NoAdditionalSas
            | NotifyType::InternalAddressFailure
            | NotifyType::FailedCpRequired
    )
}

/// Responder's narrowing (RFC 7296 2.9): every non-empty intersection of a
/// proposed selector with a configured one.
fn narrow(proposed: &[TrafficSelector], configured: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for p in proposed {
        for c in configured {
            if let Some(ts) = p.intersect(c) {
                if !out.contains(&ts) {
                    out.push(ts);
                }
            }
        }
    }
    out
}

/// The child configuration a CHILD_SA request fits, its selectors
/// narrowed (RFC 7296 2.9), and the mode.
#[derive(Debug)]
struct ChildFit<'c> {
    config: &'c ChildConfig,
    mode: Mode,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
}

/// The responder's choice among `children` for a request proposing `tsi`
/// and `tsr`, with USE_TRANSPORT_MODE or not: the first whose selectors
/// the proposal narrows to (RFC 7296 2.9) in the mode asked for; failing
/// that, the first tunnel-mode one for a request of transport mode (the
/// responder declines transport mode by leaving the notification out of
/// its answer, 1.3.1). When none fits: NO_PROPOSAL_CHOSEN if only the
/// mode kept one out (a transport-mode child is never given tunnel mode),
/// TS_UNACCEPTABLE otherwise.
///
/// The children are those of the peer the initiator authenticated as, so
/// their selectors are what that identity may use (RFC 4301 4.4.3: the PAD
/// ties an authenticated identity to them): a TSi outside them, for a home
/// agent another mobile node's home address (RFC 4877 4.4), narrows to
/// nothing and is refused.
fn fit_child<'c>(
    children: impl Iterator<Item = &'c ChildConfig>,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    transport: bool,
) -> Result<ChildFit<'c>, NotifyType> {
    let mut tunnel_instead = None;
    let mut mode_refused = false;
    for config in children {
        let remote_ts = narrow(tsi, &config.remote_ts);
        let local_ts = narrow(tsr, &config.local_ts);
        if remote_ts.is_empty() || local_ts.is_empty() {
            continue;
        }
        let fit = |mode| ChildFit {
            config,
            mode,
            local_ts,
            remote_ts,
        };
        match (config.mode, transport) {
            (Mode::Transport, true) => return Ok(fit(Mode::Transport)),
            (Mode::Tunnel, false) => return Ok(fit(Mode::Tunnel)),
            (Mode::Tunnel, true) => {
                tunnel_instead = tunnel_instead.or_else(|| Some(fit(Mode::Tunnel)));
            }
            (Mode::Transport, false) => mode_refused = true,
        }
    }
    match tunnel_instead {
        Some(fit) => Ok(fit),
        None if mode_refused => Err(NotifyType::NoProposalChosen),
        None => Err(NotifyType::TsUnacceptable),
    }
}

/// Whether each of `chosen` lies within one of `proposed` (initiator's
/// check of the responder's narrowing).
fn within(chosen: &[TrafficSelector], proposed: &[TrafficSelector]) -> bool {
    !chosen.is_empty()
        && chosen
            .iter()
            .all(|c| proposed.iter().any(|p| c.is_subset_of(p)))
}

impl Endpoint {
    /// An endpoint with a validated configuration.
    pub fn new(config: EndpointConfig) -> Result<Endpoint, IkeError> {
        config.validate()?;
        let rng = SystemRandom::new();
        let mut secret = vec![0u8; 32];
        rng.fill(&mut secret).map_err(|_| CryptoError::Random)?;
        Ok(Endpoint {
            peers: vec![config.peer.clone()],
            config,
            rng,
            sas: HashMap::new(),
            by_initiator: HashMap::new(),
            cookie_secret: Secret::new(secret),
            out: Out::default(),
            wall_clock: None,
        })
    }

    /// Adds a peer configuration, validated like the first. Peers of one
    /// endpoint have distinct names and distinct pairs of identities
    /// (`local_id`, `remote_id`): a responder picks the peer by the
    /// identities of IKE_AUTH (RFC 7296 2.15, 3.5), which is after it
    /// answered IKE_SA_INIT with no peer known yet, so every peer must
    /// accept the same IKE proposals (the first peer's are the ones
    /// answered from).
    pub fn add_peer(&mut self, peer: PeerConfig) -> Result<(), IkeError> {
        let err = |field: &str, reason| ConfigError {
            peer: peer.name.clone(),
            field: field.into(),
            reason,
        };
        EndpointConfig {
            peer: peer.clone(),
            ..self.config.clone()
        }
        .validate()?;
        if self.peers.iter().any(|p| p.name == peer.name) {
            return Err(err("name", "used by another peer of the endpoint").into());
        }
        if self
            .peers
            .iter()
            .any(|p| p.local_id == peer.local_id && p.remote_id == peer.remote_id)
        {
            return Err(err(
                "remote_id",
                "another peer of the endpoint has the same local and remote identities",
            )
            .into());
        }
        if peer.ike_proposals != self.peers[0].ike_proposals {
            return Err(err(
                "ike_proposals",
                "differ from those of the endpoint's other peers (IKE_SA_INIT is answered before the peer is known)",
            )
            .into());
        }
        self.peers.push(peer);
        Ok(())
    }

    /// The peer configuration IKE SA `sa` belongs to.
    fn peer(&self, sa: &IkeSa) -> &PeerConfig {
        &self.peers[sa.peer]
    }

    /// The responder's choice of peer for an IKE_AUTH request (RFC 7296
    /// 2.15, 3.5): the first whose `remote_id` is the initiator's IDi and,
    /// when the initiator named whom it wants to reach with IDr, whose
    /// `local_id` is that IDr.
    fn peer_for(&self, idi: &IdPayload, idr: Option<&IdPayload>) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.remote_id.matches(idi) && idr.is_none_or(|idr| p.local_id.matches(idr)))
    }

    /// Tells the endpoint the wall-clock time (since the Unix epoch), which
    /// the peer's certificates must be valid at. The core reads no clock:
    /// an owner with certificate authentication calls this before handing
    /// in datagrams; until it does, certificates are refused.
    pub fn set_wall_clock(&mut self, since_unix_epoch: Duration) {
        self.wall_clock = Some(since_unix_epoch);
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.out.counters
    }

    /// IKE SAs in any state.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Responder IKE SAs waiting for IKE_AUTH, or that refused it and wait
    /// for its retransmissions.
    pub fn half_open_count(&self) -> usize {
        self.sas
            .values()
            .filter(|s| matches!(s.state, State::HalfOpen | State::Refused))
            .count()
    }

    /// After refusing IKE_AUTH: no IKE SA, but the answer stays for the
    /// request's retransmissions until the half-open timeout.
    fn refuse_ike_sa(&mut self, now: Timestamp, sa: &mut IkeSa) {
        sa.state = State::Refused;
        sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.sas.values().filter_map(|sa| self.deadline(sa)).min()
    }

    fn deadline(&self, sa: &IkeSa) -> Option<Timestamp> {
        let mut d: Option<Timestamp> = sa.pending.as_ref().map(|p| p.next_at);
        let mut earliest = |t: Timestamp| d = Some(d.map_or(t, |x| x.min(t)));
        if sa.state == State::HalfOpen {
            earliest(sa.created.saturating_add(self.config.half_open_timeout));
        }
        // Only an IKE SA in use checks liveness and rekeys: not one a rekey
        // made that is not adopted (yet).
        let in_use = sa.state == State::Established && sa.pending.is_none() && sa.announced;
        if let (true, Some(iv)) = (in_use, self.peer(sa).liveness) {
            earliest(sa.last_heard.saturating_add(iv));
        }
        if in_use {
            earliest(sa.rekey_at);
            if let Some(t) = Self::next_rekey(sa).map(|c| c.rekey_at) {
                earliest(t);
            }
            if let Some(t) = sa.missing_children.iter().map(|(_, t)| *t).min() {
                earliest(t);
            }
        }
        if let Some(t) = sa.expire_at {
            earliest(t);
        }
        // Hard lifetimes hold whatever is outstanding (a rekey stuck in
        // retransmission included).
        if sa.state == State::Established && sa.announced {
            earliest(sa.hard_at);
            if let Some(t) = sa.children.iter().map(|c| c.hard_at).min() {
                earliest(t);
            }
        }
        if let Some(t) = self.keepalive_due(sa) {
            earliest(t);
        }
        d
    }

    /// When the next NAT-keepalive is due: sent only by the side behind
    /// the NAT (RFC 3948 2.3), for an established IKE SA in use.
    fn keepalive_due(&self, sa: &IkeSa) -> Option<Timestamp> {
        let iv = self.peer(sa).nat_keepalive?;
        (sa.nat_local && sa.state == State::Established && sa.announced)
            .then(|| sa.keepalive_sent.saturating_add(iv))
    }

    fn random(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        self.rng.fill(buf).map_err(|_| CryptoError::Random)
    }

    fn new_ike_spi(&self) -> Result<u64, CryptoError> {
        loop {
            let mut b = [0u8; 8];
            self.random(&mut b)?;
            let spi = u64::from_be_bytes(b);
            if spi != 0 && !self.sas.contains_key(&spi) {
                return Ok(spi);
            }
        }
    }

    /// A fresh inbound ESP SPI (0-255 are reserved, RFC 4303 2.1), unique
    /// among our CHILD_SAs; `current` is an SA taken out of the map.
    fn new_child_spi(&self, current: &IkeSa) -> Result<u32, CryptoError> {
        loop {
            let mut b = [0u8; 4];
            self.random(&mut b)?;
            let spi = u32::from_be_bytes(b);
            let used = |sa: &IkeSa| {
                sa.first_child_spi == spi || sa.children.iter().any(|c| c.inbound_spi == spi)
            };
            if spi > 255 && !used(current) && !self.sas.values().any(used) {
                return Ok(spi);
            }
        }
    }

    /// Our IKE proposals, numbered from 1, with `spi` (empty in
    /// IKE_SA_INIT, our new SPI in a rekey).
    fn ike_offer(&self, sa: &IkeSa, spi: Vec<u8>) -> SaPayload {
        let proposals = self.peer(sa).ike_proposals.iter().zip(1u8..);
        SaPayload {
            proposals: proposals.map(|(p, n)| p.to_wire(n, spi.clone())).collect(),
        }
    }

    /// Our ESP proposals, numbered from 1, with our inbound `spi`; their
    /// Diffie-Hellman groups only with `pfs` (not in IKE_AUTH, whose
    /// CHILD_SA has no KE payload, RFC 7296 1.2).
    fn esp_offer(&self, sa: &IkeSa, spi: u32, pfs: bool) -> SaPayload {
        let proposals = self.peer(sa).esp_proposals.iter().zip(1u8..);
        let wire = |(p, n): (&EspProposal, u8)| {
            if pfs {
                p.to_wire(n, spi)
            } else {
                EspProposal {
                    groups: Vec::new(),
                    ..p.clone()
                }
                .to_wire(n, spi)
            }
        };
        SaPayload {
            proposals: proposals.map(wire).collect(),
        }
    }

    /// Our Diffie-Hellman key of the request that carried nonce `ni`.
    fn take_dh(sa: &mut IkeSa, ni: &[u8]) -> Option<DhPrivate> {
        let i = sa.pending_dh.iter().position(|(n, _)| n == ni)?;
        Some(sa.pending_dh.swap_remove(i).1)
    }

    /// When an SA made `now` with `lifetime` is rekeyed: at the end of its
    /// lifetime less up to `jitter`, at random.
    fn rekey_time(
        &self,
        now: Timestamp,
        lifetime: Duration,
        jitter: Duration,
    ) -> Result<Timestamp, CryptoError> {
        let mut b = [0u8; 2];
        self.random(&mut b)?;
        let early = jitter.mul_f64(f64::from(u16::from_be_bytes(b)) / 65536.0);
        Ok(now.saturating_add(lifetime.saturating_sub(early)))
    }

    /// The wait before a refused rekey is tried again: REKEY_RETRY plus up
    /// to as much again at random, so two peers that collided (RFC 7296
    /// 2.25, TEMPORARY_FAILURE) do not collide again.
    fn retry_delay(&self) -> Result<Duration, CryptoError> {
        let mut b = [0u8; 2];
        self.random(&mut b)?;
        let extra = REKEY_RETRY.as_millis() as u64 * u64::from(u16::from_be_bytes(b)) / 65536;
        Ok(REKEY_RETRY + Duration::from_millis(extra))
    }

    fn nonce(&self) -> Result<Vec<u8>, CryptoError> {
        let mut n = vec![0u8; NONCE_LEN];
        self.random(&mut n)?;
        Ok(n)
    }

    /// Starts an IKE SA (and its first CHILD_SA) of the endpoint's first
    /// peer from `local` to `remote`.
    pub fn initiate(
        &mut self,
        now: Timestamp,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, IkeError> {
        self.initiate_peer(now, 0, local, remote)
    }

    /// Starts an IKE SA (and its first CHILD_SA) of the peer named `peer`
    /// from `local` to `remote`.
    pub fn initiate_as(
        &mut self,
        now: Timestamp,
        peer: &str,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, IkeError> {
        let i = self
            .peers
            .iter()
            .position(|p| p.name == peer)
            .ok_or_else(|| IkeError::UnknownPeer(peer.into()))?;
        self.initiate_peer(now, i, local, remote)
    }

    fn initiate_peer(
        &mut self,
        now: Timestamp,
        peer: usize,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, IkeError> {
        // validate() made sure there is one.
        let group = self.peers[peer]
            .ike_proposals
            .first()
            .and_then(|p| p.groups.first().copied())
            .ok_or_else(|| ConfigError {
                peer: self.peers[peer].name.clone(),
                field: "ike_proposals[0].groups".into(),
                reason: "empty",
            })?;
        let spi = self.new_ike_spi()?;
        let mut sa = IkeSa::new(true, (spi, 0), (local, remote), State::InitSent, group, now);
        sa.peer = peer;
        sa.dh = Some(DhPrivate::generate(group, &self.rng)?);
        sa.ni = self.nonce()?;
        sa.announced = true;
        self.send_init(now, &mut sa)?;
        self.sas.insert(spi, sa);
        Ok(IkeSaId(spi))
    }

    /// Deletes an IKE SA (RFC 7296 1.4.1): its CHILD_SAs are reported
    /// deleted at once, the IKE SA when the peer answered or gave none.
    pub fn delete_ike(&mut self, now: Timestamp, id: IkeSaId) -> Result<(), IkeError> {
        let mut sa = self.sas.remove(&id.0).ok_or(IkeError::UnknownIkeSa(id))?;
        if sa.state != State::Established {
            let name = &self.peers[sa.peer].name;
            self.out.close(&mut sa, name, DownReason::DeletedLocally);
            self.forget(&sa);
            return Ok(());
        }
        for c in sa.children.drain(..) {
            self.out.child_deleted(sa.id, &self.peers[sa.peer].name, &c);
        }
        sa.state = State::Deleting;
        let del = Payload::Delete(DeletePayload {
            protocol_id: PROTO_IKE,
            spi_size: 0,
            spis: Vec::new(),
        });
        let r = self.request(
            now,
            &mut sa,
            ExchangeType::Informational,
            vec![del],
            RequestKind::DeleteIke,
        );
        self.sas.insert(id.0, sa);
        r
    }

    /// Moves IKE SA `id` to `local` and `remote` without an exchange:
    /// what Mobile IPv6 asks when a Binding Update and its Acknowledgement
    /// with the K (Key Management Mobility Capability) bit set moved the
    /// mobile node to a new care-of address (RFC 6275 6.1.7, 6.1.8; RFC
    /// 4877: both ends then update the IKE SA's peer address to the
    /// care-of address, so that the IKE SA survives the movement). Its
    /// requests, retransmissions, liveness checks and rekeys go between
    /// the new addresses from now on. An IKE SA that moved to UDP 4500
    /// (RFC 7296 2.23) stays there: a port 500 given is taken as 4500, as
    /// its ESP is in UDP on those ports (RFC 3948). A request outstanding
    /// is sent again at `now`, over the new addresses (the old path is
    /// gone). The owner moves its CHILD_SAs' tunnel endpoints and
    /// encapsulation itself.
    pub fn update_addresses(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| {
            if sa.state != State::Established {
                return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
            }
            let on_nat_t = sa.local.port() == NAT_T_PORT;
            let (mut local, mut remote) = (local, remote);
            for addr in [&mut local, &mut remote] {
                if on_nat_t && addr.port() == IKE_PORT {
                    addr.set_port(NAT_T_PORT);
                }
            }
            if !sa.initiator {
                // The entry follows the IKE SA, so that it is removed with it.
                if let Some(entry) = this.by_initiator.remove(&(sa.remote, sa.spi_i)) {
                    this.by_initiator.insert((remote, sa.spi_i), entry);
                }
            }
            sa.local = local;
            sa.remote = remote;
            if let Some(p) = sa.pending.as_mut() {
                p.next_at = now;
            }
            Ok(())
        })
    }

    /// Runs `f` on IKE SA `id`, taken out of the table meanwhile.
    fn with_sa(
        &mut self,
        id: IkeSaId,
        f: impl FnOnce(&mut Endpoint, &mut IkeSa) -> Result<(), IkeError>,
    ) -> Result<(), IkeError> {
        let mut sa = self.sas.remove(&id.0).ok_or(IkeError::UnknownIkeSa(id))?;
        let r = f(self, &mut sa);
        self.sas.insert(id.0, sa);
        r
    }

    /// The child configuration named `name` of `sa`'s peer.
    fn child_config(&self, sa: &IkeSa, name: &str) -> Result<&ChildConfig, IkeError> {
        self.peer(sa)
            .children
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| IkeError::UnknownChild(name.to_string()))
    }

    fn forget(&mut self, sa: &IkeSa) {
        if !sa.initiator {
            self.by_initiator.remove(&(sa.remote, sa.spi_i));
        }
    }
}

/// The error notification refusing a CHILD_SA, and its data.
type ChildRefusal = (NotifyType, Vec<u8>);

/// A CHILD_SA the responder accepted, and the payloads that say so.
#[derive(Debug)]
struct ChildReply {
    child: NewChild,
    reply: Vec<Payload>,
    /// Our KE payload when the CHILD_SA has PFS.
    ke: Option<Payload>,
}
