//! The IKEv2 state machine in quinn-proto's sans-IO shape: datagrams and
//! `now` in ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`]),
//! datagrams, events and the next deadline out ([`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], [`Endpoint::poll_timeout`]). No clock, socket
//! or thread inside; randomness comes from the operating system through
//! ring.
//!
//! Exchanges: IKE_SA_INIT (RFC 7296 1.2, with COOKIE 2.6, INVALID_KE_PAYLOAD
//! 1.2, NAT detection 2.23), IKE_AUTH with a pre-shared key (2.15) and the
//! first CHILD_SA (1.3.1 transport mode, 2.9 selector narrowing, 2.4
//! INITIAL_CONTACT), INFORMATIONAL (1.4: Delete of CHILD_SAs and of the IKE
//! SA; 2.4 liveness). Each side keeps a window of one request (2.3);
//! requests are retransmitted with exponential backoff until given up
//! (2.1, 2.4), and a retransmitted request gets the cached response.

use crate::config::{EndpointConfig, Mode};
use crate::crypto::{
    cookie, ct_eq, derive_child_keys, derive_ike_keys, derive_rekeyed_ike_keys, nat_detection_hash,
    psk_auth, CryptoError, DhPrivate, IkeKeys, Secret, SkKeys,
};
use crate::event::{
    ChildSaEstablished, Counters, DownReason, DropReason, Event, IkeSaId, Transmit,
};
use crate::suite::{
    accept_esp_reply, accept_ike_reply, accept_ike_reply_with_spi, esp_reply, ike_reply,
    select_esp, select_ike, select_ike_with_spi, DhGroup, EspProposal, EspSuite, IkeSuite, Pfs,
};
use crate::wire::{
    chain_len, emit_chain, parse_chain, AuthPayload, DeletePayload, ExchangeType, Flags, Header,
    HeaderRepr, IdPayload, KePayload, Message, NotifyPayload, NotifyType, Payload, PayloadType,
    ProtocolId, SaPayload, TrafficSelector, WireError,
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
    /// No IKE SA with this ID.
    #[error("no IKE SA {0:?}")]
    UnknownIkeSa(IkeSaId),
    /// The IKE SA is not established.
    #[error("IKE SA {0:?} is not established")]
    NotEstablished(IkeSaId),
    /// No CHILD_SA with this inbound SPI.
    #[error("no CHILD_SA with inbound SPI {0:#010x}")]
    UnknownChildSa(u32),
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
    /// CREATE_CHILD_SA for a CHILD_SA (RFC 7296 1.3.1), rekeying the one
    /// with inbound SPI `old` if any (1.3.3), as asked here.
    CreateChild {
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
    inbound_spi: u32,
    outbound_spi: u32,
    mode: Mode,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// When to rekey it (its configured lifetime).
    rekey_at: Timestamp,
    /// Our Delete of it is outstanding.
    deleting: bool,
    /// The nonces of the peer's CREATE_CHILD_SA that rekeyed it, for
    /// telling which of two simultaneous rekeys wins (RFC 7296 2.8.1).
    rekeyed_by_peer: Option<(Vec<u8>, Vec<u8>)>,
}

/// What we asked for in a request creating a CHILD_SA.
#[derive(Debug)]
struct Asked<'a> {
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
    created: Timestamp,
    last_heard: Timestamp,
    nat_local: bool,
    nat_remote: bool,
    /// Whether the owner knows of it (it initiated it or saw it come up),
    /// so its end is reported.
    announced: bool,
    /// When to rekey it (its configured lifetime).
    rekey_at: Timestamp,
    /// Our Diffie-Hellman keys of outstanding rekeys (of the IKE SA, or of
    /// CHILD_SAs with PFS), by the nonce of their request.
    pending_dh: Vec<(Vec<u8>, DhPrivate)>,
    /// Replaced by a rekey: dropped at this time if the peer has not
    /// deleted it by then.
    expire_at: Option<Timestamp>,
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

/// An IKEv2 endpoint for one peer configuration, initiator and responder.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: SystemRandom,
    sas: HashMap<u64, IkeSa>,
    /// Responder SAs by (peer address, initiator SPI), so a retransmitted
    /// IKE_SA_INIT finds its cached answer (RFC 7296 2.1).
    by_initiator: HashMap<(SocketAddr, u64), u64>,
    cookie_secret: Secret,
    out: Out,
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
            config,
            rng,
            sas: HashMap::new(),
            by_initiator: HashMap::new(),
            cookie_secret: Secret::new(secret),
            out: Out::default(),
        })
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.out.counters
    }

    /// IKE SAs in any state.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Responder IKE SAs waiting for IKE_AUTH.
    pub fn half_open_count(&self) -> usize {
        self.sas
            .values()
            .filter(|s| s.state == State::HalfOpen)
            .count()
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
        if let (State::Established, None, Some(iv)) =
            (sa.state, &sa.pending, self.config.peer.liveness)
        {
            earliest(sa.last_heard.saturating_add(iv));
        }
        if let (State::Established, None) = (sa.state, &sa.pending) {
            earliest(sa.rekey_at);
            if let Some(t) = Self::next_rekey(sa).map(|c| c.rekey_at) {
                earliest(t);
            }
        }
        if let Some(t) = sa.expire_at {
            earliest(t);
        }
        d
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
    fn ike_offer(&self, spi: Vec<u8>) -> SaPayload {
        let proposals = self.config.peer.ike_proposals.iter().zip(1u8..);
        SaPayload {
            proposals: proposals.map(|(p, n)| p.to_wire(n, spi.clone())).collect(),
        }
    }

    /// Our ESP proposals, numbered from 1, with our inbound `spi`; their
    /// Diffie-Hellman groups only with `pfs` (not in IKE_AUTH, whose
    /// CHILD_SA has no KE payload, RFC 7296 1.2).
    fn esp_offer(&self, spi: u32, pfs: bool) -> SaPayload {
        let proposals = self.config.peer.esp_proposals.iter().zip(1u8..);
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

    /// Starts an IKE SA (and its first CHILD_SA) from `local` to `remote`.
    pub fn initiate(
        &mut self,
        now: Timestamp,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSaId, IkeError> {
        let group = self
            .config
            .peer
            .ike_proposals
            .first()
            .and_then(|p| p.groups.first().copied())
            .ok_or(CryptoError::Random)?;
        let spi = self.new_ike_spi()?;
        let mut sa = IkeSa {
            id: spi,
            initiator: true,
            spi_i: spi,
            spi_r: 0,
            local,
            remote,
            state: State::InitSent,
            group,
            dh: Some(DhPrivate::generate(group, &self.rng)?),
            suite: None,
            ni: self.nonce()?,
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
            created: now,
            last_heard: now,
            nat_local: false,
            nat_remote: false,
            announced: true,
            rekey_at: Timestamp(u64::MAX),
            pending_dh: Vec::new(),
            expire_at: None,
        };
        self.send_init(now, &mut sa)?;
        self.sas.insert(spi, sa);
        Ok(IkeSaId(spi))
    }

    /// Deletes an IKE SA (RFC 7296 1.4.1): its CHILD_SAs are reported
    /// deleted at once, the IKE SA when the peer answered or gave none.
    pub fn delete_ike(&mut self, now: Timestamp, id: IkeSaId) -> Result<(), IkeError> {
        let mut sa = self.sas.remove(&id.0).ok_or(IkeError::UnknownIkeSa(id))?;
        if sa.state != State::Established {
            self.out
                .close(&mut sa, &self.config.peer.name, DownReason::DeletedLocally);
            self.forget(&sa);
            return Ok(());
        }
        for c in sa.children.drain(..) {
            self.out.child_deleted(sa.id, &self.config.peer.name, &c);
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

    /// Deletes the CHILD_SA with our `inbound_spi` (RFC 7296 1.4.1); it is
    /// reported deleted when the peer answered (or the IKE SA ends).
    pub fn delete_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.delete_child_of(now, sa, inbound_spi))
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

    fn delete_child_of(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        if sa.state != State::Established {
            return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
        }
        let c = sa
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == inbound_spi && !c.deleting)
            .ok_or(IkeError::UnknownChildSa(inbound_spi))?;
        // Reported deleted when the peer confirms (RFC 7296 1.4.1), so the
        // inbound SA lives until then.
        c.deleting = true;
        self.request_child_delete(now, sa, inbound_spi)
    }

    /// An INFORMATIONAL request deleting our inbound CHILD_SA `spi` (the
    /// Delete payload names the SPIs its sender receives on, RFC 7296 3.11).
    fn request_child_delete(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        let del = Payload::Delete(DeletePayload {
            protocol_id: PROTO_ESP,
            spi_size: 4,
            spis: vec![inbound_spi.to_be_bytes().to_vec()],
        });
        self.request(
            now,
            sa,
            ExchangeType::Informational,
            vec![del],
            RequestKind::DeleteChild(inbound_spi),
        )
    }

    fn forget(&mut self, sa: &IkeSa) {
        if !sa.initiator {
            self.by_initiator.remove(&(sa.remote, sa.spi_i));
        }
    }

    /// Builds a message of `sa`: IKE_SA_INIT in clear, every other one
    /// inside an SK payload.
    fn build(
        &mut self,
        sa: &IkeSa,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<u8>, IkeError> {
        self.out.count_notifies_sent(payloads);
        let header = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            next_payload: PayloadType::NoNext,
            minor_version: 0,
            exchange,
            flags: Flags::new(sa.initiator, response),
            message_id,
            length: 0,
        };
        if exchange == ExchangeType::IkeSaInit {
            return Ok(Message {
                header,
                payloads: payloads.to_vec(),
            }
            .to_vec()?);
        }
        let sk = sa
            .sk_out
            .as_ref()
            .ok_or(IkeError::NotEstablished(IkeSaId(sa.id)))?;
        let mut inner = vec![0u8; chain_len(payloads)];
        emit_chain(payloads, &mut inner)?;
        let first = payloads.first().map_or(PayloadType::NoNext, Payload::kind);
        Ok(sk.seal(&header, first, &inner, &self.rng)?)
    }

    /// Sends a request, or queues it behind the outstanding one (a window
    /// of one, RFC 7296 2.3).
    fn request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        payloads: Vec<Payload>,
        kind: RequestKind,
    ) -> Result<(), IkeError> {
        if sa.pending.is_some() {
            sa.queued.push_back((exchange, payloads, kind));
            return Ok(());
        }
        let message_id = sa.next_message_id;
        let bytes = self.build(sa, exchange, false, message_id, &payloads)?;
        sa.next_message_id = sa.next_message_id.wrapping_add(1);
        self.out.counters.requests_sent.bump(exchange);
        self.out.send(sa, bytes.clone());
        let initial = self.config.peer.retransmit.initial;
        sa.pending = Some(Pending {
            message_id,
            exchange,
            kind,
            bytes,
            retransmits: 0,
            interval: initial,
            next_at: now.saturating_add(initial),
        });
        Ok(())
    }

    fn send_queued(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        if sa.pending.is_none() {
            if let Some((exchange, payloads, kind)) = sa.queued.pop_front() {
                return self.request(now, sa, exchange, payloads, kind);
            }
        }
        Ok(())
    }

    fn respond(
        &mut self,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<(), IkeError> {
        let bytes = self.build(sa, exchange, true, message_id, payloads)?;
        self.out.counters.responses_sent.bump(exchange);
        self.out.send(sa, bytes.clone());
        sa.last_response = Some((message_id, bytes));
        Ok(())
    }

    /// (Re)sends our IKE_SA_INIT request: [N(COOKIE),] SA, KE, Ni,
    /// N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP).
    fn send_init(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        let mut payloads = Vec::new();
        if let Some(c) = &sa.cookie {
            payloads.push(notify(NotifyType::Cookie, c.clone()));
        }
        let proposals = self.ike_offer(Vec::new());
        let ke = sa
            .dh
            .as_ref()
            .map(|d| d.public_value().to_vec())
            .unwrap_or_default();
        payloads.push(Payload::Sa(proposals));
        payloads.push(Payload::Ke(KePayload {
            group: sa.group.number(),
            data: ke,
        }));
        payloads.push(Payload::Nonce(sa.ni.clone()));
        payloads.push(notify(
            NotifyType::NatDetectionSourceIp,
            nat_detection_hash(sa.spi_i, 0, sa.local).to_vec(),
        ));
        payloads.push(notify(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(sa.spi_i, 0, sa.remote).to_vec(),
        ));
        sa.pending = None;
        sa.next_message_id = 0;
        self.request(
            now,
            sa,
            ExchangeType::IkeSaInit,
            payloads,
            RequestKind::Init,
        )?;
        sa.init_request = sa
            .pending
            .as_ref()
            .map(|p| p.bytes.clone())
            .unwrap_or_default();
        Ok(())
    }

    /// Checks the peer's NAT_DETECTION_* notifications (RFC 7296 2.23):
    /// its source hash against the address it came from, its destination
    /// hash against ours.
    fn detect_nat(sa: &mut IkeSa, payloads: &[Payload], spi_r: u64) {
        let mut source_seen = false;
        let mut source_match = false;
        for p in payloads {
            if let Payload::Notify(n) = p {
                match n.notify_type {
                    NotifyType::NatDetectionSourceIp => {
                        source_seen = true;
                        source_match |= n.data == nat_detection_hash(sa.spi_i, spi_r, sa.remote);
                    }
                    NotifyType::NatDetectionDestinationIp => {
                        sa.nat_local = n.data != nat_detection_hash(sa.spi_i, spi_r, sa.local);
                    }
                    _ => {}
                }
            }
        }
        sa.nat_remote = source_seen && !source_match;
    }

    /// Handles one received UDP payload (IKE on port 500, or after the
    /// non-ESP marker on 4500 once the caller stripped it).
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        self.out.counters.datagrams_received += 1;
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(WireError::BadMajorVersion(_)) => {
                return self.out.drop(DropReason::BadMajorVersion)
            }
            Err(e @ WireError::UnsupportedCritical(_)) => {
                // RFC 7296 2.5: an IKE_SA_INIT request is answered (others
                // are answered once decrypted, or are responses).
                let request = Header::new_checked(data)
                    .and_then(|h| HeaderRepr::parse(&h))
                    .ok()
                    .filter(|h| {
                        h.exchange == ExchangeType::IkeSaInit && !h.flags.response() && h.spi_r == 0
                    });
                match request {
                    Some(h) => {
                        self.out.counters.requests_received.bump(h.exchange);
                        if let Err(e) = self.stateless_reply(&h, remote, local, refusal(e)) {
                            self.local_failure(e);
                        }
                    }
                    None => self.out.drop(DropReason::Malformed),
                }
                return;
            }
            Err(_) => return self.out.drop(DropReason::Malformed),
        };
        let h = msg.header;
        // Message::parse checked that the header's length fits.
        let bytes = &data[..h.length as usize];
        if h.exchange == ExchangeType::IkeSaInit && !h.flags.response() {
            if h.spi_r != 0 || h.message_id != 0 || !h.flags.initiator() {
                return self.out.drop(DropReason::Malformed);
            }
            if let Err(e) = self.responder_init(now, remote, local, bytes, msg) {
                self.local_failure(e);
            }
            return;
        }
        let ours = if h.flags.initiator() {
            h.spi_r
        } else {
            h.spi_i
        };
        let Some(mut sa) = self.sas.remove(&ours) else {
            return self.out.drop(DropReason::UnknownSpi);
        };
        let spis_match = h.spi_i == sa.spi_i
            && (h.spi_r == sa.spi_r || (sa.state == State::InitSent && h.spi_r != 0));
        let after = if !spis_match || h.flags.initiator() == sa.initiator {
            self.out.drop(DropReason::UnknownSpi);
            Ok(After::Keep)
        } else if h.flags.response() {
            self.on_response(now, &mut sa, &h, bytes, msg.payloads, (remote, local))
        } else {
            self.on_request(now, &mut sa, &h, bytes, msg.payloads, (remote, local))
        };
        let after = after.unwrap_or_else(|e| {
            self.local_failure(e);
            After::Keep
        });
        match after {
            After::Keep => {
                self.sas.insert(ours, sa);
            }
            After::Remove => self.forget(&sa),
        }
    }

    fn local_failure(&mut self, _e: IkeError) {
        self.out.drop(DropReason::LocalFailure);
    }

    /// Opens a message's SK payload (RFC 7296 3.14). `Err(None)`: dropped
    /// and counted; `Err(Some(error))`: authentic but its inner payloads are
    /// malformed (answered with INVALID_SYNTAX when a request). Behind a
    /// NAT, an authentic message moves the IKE SA to the addresses it came
    /// on (RFC 7296 2.23).
    fn open(
        &mut self,
        sa: &mut IkeSa,
        bytes: &[u8],
        payloads: &[Payload],
        (remote, local): (SocketAddr, SocketAddr),
    ) -> Result<Vec<Payload>, Option<WireError>> {
        let (Some(Payload::Sk(sk)), Some(keys)) = (payloads.last(), sa.sk_in.as_ref()) else {
            self.out.drop(DropReason::Malformed);
            return Err(None);
        };
        let body_at = bytes.len() - sk.body.len();
        let inner = match keys.open(bytes, body_at) {
            Ok(i) => i,
            Err(_) => {
                self.out.drop(DropReason::IntegrityCheckFailed);
                return Err(None);
            }
        };
        if sa.nat_local || sa.nat_remote {
            sa.remote = remote;
            sa.local = local;
        }
        parse_chain(sk.first_inner, &inner).map_err(Some)
    }

    fn on_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        outer: Vec<Payload>,
        path: (SocketAddr, SocketAddr),
    ) -> Result<After, IkeError> {
        if h.message_id != sa.peer_message_id {
            let previous = sa.peer_message_id.wrapping_sub(1);
            match &sa.last_response {
                Some((id, resp)) if *id == previous && h.message_id == previous => {
                    let resp = resp.clone();
                    self.out.counters.responses_resent += 1;
                    self.out.send(sa, resp);
                }
                _ => self.out.drop(DropReason::InvalidMessageId),
            }
            return Ok(After::Keep);
        }
        let allowed = matches!(
            (h.exchange, sa.state),
            (ExchangeType::IkeAuth, State::HalfOpen)
                | (
                    ExchangeType::Informational | ExchangeType::CreateChildSa,
                    State::Established | State::Deleting
                )
        );
        if !allowed {
            self.out.drop(DropReason::UnexpectedExchange);
            return Ok(After::Keep);
        }
        let payloads = match self.open(sa, bytes, &outer, path) {
            Ok(p) => p,
            Err(None) => return Ok(After::Keep),
            Err(Some(e)) => {
                // Authentic, so the message ID is used up (RFC 7296 2.21.2).
                sa.peer_message_id = sa.peer_message_id.wrapping_add(1);
                let n = [refusal(e)];
                self.respond(sa, h.exchange, h.message_id, &n)?;
                return Ok(if h.exchange == ExchangeType::IkeAuth {
                    After::Remove
                } else {
                    After::Keep
                });
            }
        };
        self.out.counters.requests_received.bump(h.exchange);
        self.out.count_notifies_received(&payloads);
        sa.peer_message_id = sa.peer_message_id.wrapping_add(1);
        sa.last_heard = now;
        match h.exchange {
            ExchangeType::IkeAuth => self.on_auth_request(now, sa, h, &payloads),
            ExchangeType::Informational => self.on_informational(sa, h, &payloads),
            _ => self.on_create_child(now, sa, h, &payloads),
        }
    }

    fn on_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        outer: Vec<Payload>,
        path: (SocketAddr, SocketAddr),
    ) -> Result<After, IkeError> {
        let Some(p) = &sa.pending else {
            self.out.drop(DropReason::InvalidMessageId);
            return Ok(After::Keep);
        };
        if p.message_id != h.message_id || p.exchange != h.exchange {
            self.out.drop(DropReason::InvalidMessageId);
            return Ok(After::Keep);
        }
        let kind = p.kind.clone();
        let payloads = if h.exchange == ExchangeType::IkeSaInit {
            outer
        } else {
            match self.open(sa, bytes, &outer, path) {
                Ok(p) => p,
                Err(None) => return Ok(After::Keep),
                Err(Some(_)) => {
                    self.out.drop(DropReason::Malformed);
                    return Ok(After::Keep);
                }
            }
        };
        self.out.counters.responses_received.bump(h.exchange);
        self.out.count_notifies_received(&payloads);
        sa.last_heard = now;
        sa.pending = None;
        let name = self.config.peer.name.clone();
        let after = match kind {
            RequestKind::Init => self.on_init_response(now, sa, h, bytes, &payloads)?,
            RequestKind::Auth => self.on_auth_response(now, sa, &payloads)?,
            RequestKind::Liveness => After::Keep,
            RequestKind::DeleteChild(spi) => {
                if let Some(i) = sa.children.iter().position(|c| c.inbound_spi == spi) {
                    let c = sa.children.remove(i);
                    self.out.child_deleted(sa.id, &name, &c);
                }
                After::Keep
            }
            RequestKind::CreateChild {
                old,
                inbound_spi,
                ni,
                mode,
                local_ts,
                remote_ts,
            } => {
                let dh = Self::take_dh(sa, &ni);
                let asked = Asked {
                    inbound_spi,
                    mode,
                    local_ts: &local_ts,
                    remote_ts: &remote_ts,
                    ni,
                    rekeys: old,
                    pfs: dh
                        .as_ref()
                        .map_or(Pfs::Without, |d| Pfs::With(d.group().number())),
                    dh,
                };
                self.on_create_child_response(now, sa, &payloads, asked)?
            }
            RequestKind::RekeyIke { spi, ni } => {
                self.on_ike_rekey_response(now, sa, &payloads, spi, ni)?
            }
            RequestKind::DeleteIke => {
                self.out.close(sa, &name, DownReason::DeletedLocally);
                After::Remove
            }
        };
        if after == After::Keep {
            self.send_queued(now, sa)?;
        }
        Ok(after)
    }

    fn fail(&mut self, sa: &mut IkeSa, reason: DownReason) -> After {
        let name = self.config.peer.name.clone();
        self.out.close(sa, &name, reason);
        After::Remove
    }

    /// The responder's IKE_SA_INIT answer (initiator side, RFC 7296 1.2).
    fn on_init_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        if let Some(c) = find_notify(payloads, NotifyType::Cookie) {
            // RFC 7296 2.6: retry with the cookie first, all else unchanged.
            if sa.cookie_rounds >= MAX_COOKIE_ROUNDS || c.data.is_empty() || c.data.len() > 64 {
                return Ok(self.fail(sa, DownReason::InvalidReply));
            }
            sa.cookie_rounds += 1;
            sa.cookie = Some(c.data.clone());
            self.send_init(now, sa)?;
            return Ok(After::Keep);
        }
        if let Some(n) = find_notify(payloads, NotifyType::InvalidKePayload) {
            // RFC 7296 1.2: retry with the group the responder asked for,
            // if we offered it and have not used it yet.
            let asked = (n.data.len() == 2)
                .then(|| u16::from_be_bytes([n.data[0], n.data[1]]))
                .and_then(DhGroup::from_number);
            let offered = |g: DhGroup| {
                self.config
                    .peer
                    .ike_proposals
                    .iter()
                    .any(|p| p.groups.contains(&g))
            };
            return match asked {
                Some(g) if g != sa.group && offered(g) => {
                    sa.group = g;
                    sa.dh = Some(DhPrivate::generate(g, &self.rng)?);
                    self.send_init(now, sa)?;
                    Ok(After::Keep)
                }
                _ => Ok(self.fail(sa, DownReason::PeerNotify(NotifyType::InvalidKePayload))),
            };
        }
        if let Some(t) = first_error(payloads) {
            return Ok(self.fail(sa, DownReason::PeerNotify(t)));
        }
        let found = Found::of(payloads);
        let offer = found.sa;
        let ke = found.ke;
        let nonce = found.nonce;
        let (Some(offer), Some(ke), Some(nr)) = (offer, ke, nonce) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        let Some(suite) = accept_ike_reply(offer, &self.config.peer.ike_proposals) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        if suite.group != sa.group || ke.group != sa.group.number() || h.spi_r == 0 {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        }
        let Some(dh) = sa.dh.take() else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        let Ok(shared) = dh.agree(&ke.data) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        sa.spi_r = h.spi_r;
        sa.nr = nr.clone();
        sa.init_response = bytes.to_vec();
        let keys = derive_ike_keys(&suite, &sa.ni, &sa.nr, &shared, sa.spi_i, sa.spi_r)?;
        sa.sk_out = Some(SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai));
        sa.sk_in = Some(SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar));
        sa.suite = Some(suite);
        Self::detect_nat(sa, payloads, h.spi_r);
        if sa.nat_local || sa.nat_remote {
            // RFC 7296 2.23: behind a NAT, everything after IKE_SA_INIT
            // goes over UDP 4500 (with the non-ESP marker, RFC 3948 2.2,
            // which the caller adds for that port).
            for addr in [&mut sa.local, &mut sa.remote] {
                if addr.port() == IKE_PORT {
                    addr.set_port(NAT_T_PORT);
                }
            }
        }
        // IKE_AUTH: IDi, AUTH, [N(INITIAL_CONTACT)], [N(USE_TRANSPORT_MODE)],
        // SA, TSi, TSr (RFC 7296 1.2).
        let peer = &self.config.peer;
        let idi = peer.local_id.to_payload();
        let auth = psk_auth(
            &peer.psk,
            &sa.init_request,
            &sa.nr,
            &keys.sk_pi,
            &idi.body(),
        );
        sa.keys = Some(keys);
        let spi = self.new_child_spi(sa)?;
        sa.first_child_spi = spi;
        let peer = &self.config.peer;
        let mut out = vec![
            Payload::IdI(idi),
            Payload::Auth(AuthPayload {
                method: AUTH_PSK,
                data: auth.expose().to_vec(),
            }),
        ];
        if peer.initial_contact {
            out.push(notify(NotifyType::InitialContact, Vec::new()));
        }
        if peer.mode == Mode::Transport {
            out.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        out.push(Payload::Sa(self.esp_offer(spi, false)));
        out.push(Payload::TsI(peer.local_ts.clone()));
        out.push(Payload::TsR(peer.remote_ts.clone()));
        sa.state = State::AuthSent;
        self.request(now, sa, ExchangeType::IkeAuth, out, RequestKind::Auth)?;
        Ok(After::Keep)
    }

    fn verify_auth(
        &self,
        sa: &IkeSa,
        id: &IdPayload,
        auth: &AuthPayload,
        from_initiator: bool,
    ) -> bool {
        let Some(keys) = &sa.keys else {
            return false;
        };
        let (message, nonce, sk_p) = if from_initiator {
            (&sa.init_request, &sa.nr, &keys.sk_pi)
        } else {
            (&sa.init_response, &sa.ni, &keys.sk_pr)
        };
        let expect = psk_auth(&self.config.peer.psk, message, nonce, sk_p, &id.body());
        self.config.peer.remote_id.matches(id)
            && auth.method == AUTH_PSK
            && ct_eq(&auth.data, expect.expose())
    }

    fn ike_sa_up(&mut self, now: Timestamp, sa: &mut IkeSa) {
        sa.state = State::Established;
        sa.rekey_at = now.saturating_add(self.config.peer.lifetimes.ike);
        sa.announced = true;
        if let Some(suite) = sa.suite {
            self.out.events.push_back(Event::IkeSaUp {
                ike: IkeSaId(sa.id),
                initiator: sa.initiator,
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
                suite,
                nat_local: sa.nat_local,
                nat_remote: sa.nat_remote,
            });
        }
    }

    /// Derives a CHILD_SA's keys, reports it and remembers it.
    fn child_up(&mut self, now: Timestamp, sa: &mut IkeSa, c: NewChild) -> Result<(), IkeError> {
        let Some(keys) = &sa.keys else {
            return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
        };
        let k = derive_child_keys(&keys.sk_d, &c.suite, c.shared.as_ref(), &c.ni, &c.nr)?;
        let (inbound, outbound) = if c.exchange_initiator {
            (k.responder_to_initiator, k.initiator_to_responder)
        } else {
            (k.initiator_to_responder, k.responder_to_initiator)
        };
        sa.children.push(ChildSa {
            inbound_spi: c.inbound_spi,
            outbound_spi: c.outbound_spi,
            mode: c.mode,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            rekey_at: now.saturating_add(self.config.peer.lifetimes.child),
            deleting: false,
            rekeyed_by_peer: None,
        });
        self.out
            .events
            .push_back(Event::ChildSaEstablished(Box::new(ChildSaEstablished {
                ike: IkeSaId(sa.id),
                name: self.config.peer.name.clone(),
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                mode: c.mode,
                local_ts: c.local_ts,
                remote_ts: c.remote_ts,
                suite: c.suite,
                inbound,
                outbound,
                local: sa.local,
                remote: sa.remote,
                udp_encapsulation: sa.nat_local || sa.nat_remote,
                exchange_initiator: c.exchange_initiator,
                rekeys: c.rekeys,
            })));
        Ok(())
    }

    /// The responder's IKE_AUTH answer (initiator side).
    fn on_auth_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let idr = found.idr;
        let auth = found.auth;
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = match first_error(payloads) {
                Some(t) => DownReason::PeerNotify(t),
                None => DownReason::InvalidReply,
            };
            return Ok(self.fail(sa, reason));
        };
        if !self.verify_auth(sa, idr, auth, false) {
            return Ok(self.fail(sa, DownReason::AuthenticationFailed));
        }
        self.ike_sa_up(now, sa);
        let inbound_spi = sa.first_child_spi;
        sa.first_child_spi = 0;
        if found.sa.is_none() && first_error(payloads).is_none_or(|t| !is_child_error(t)) {
            // No CHILD_SA was created.
            return Ok(After::Keep);
        }
        let peer = &self.config.peer;
        let asked = Asked {
            inbound_spi,
            mode: peer.mode,
            local_ts: &peer.local_ts,
            remote_ts: &peer.remote_ts,
            ni: sa.ni.clone(),
            rekeys: None,
            pfs: Pfs::Ignore,
            dh: None,
        };
        let child = self.accept_child_reply(payloads, asked, Some(sa.nr.clone()));
        self.child_outcome(now, sa, inbound_spi, child)?;
        Ok(After::Keep)
    }

    /// Reads the responder's answer creating a CHILD_SA (we initiated the
    /// exchange): the new CHILD_SA, or the error to report and whether the
    /// responder may have installed one we must delete.
    fn accept_child_reply(
        &self,
        payloads: &[Payload],
        asked: Asked<'_>,
        nr: Option<Vec<u8>>,
    ) -> Result<NewChild, (NotifyType, bool)> {
        if let Some(t) = first_error(payloads) {
            return Err((t, false));
        }
        let found = Found::of(payloads);
        let nr = nr.or_else(|| found.nonce.cloned());
        let (Some(offer), Some(tsi), Some(tsr), Some(nr)) = (found.sa, found.tsi, found.tsr, nr)
        else {
            return Err((NotifyType::InvalidSyntax, true));
        };
        let transport = find_notify(payloads, NotifyType::UseTransportMode).is_some();
        let Some((outbound_spi, suite)) =
            accept_esp_reply(offer, &self.config.peer.esp_proposals, asked.pfs)
        else {
            return Err((NotifyType::NoProposalChosen, true));
        };
        // PFS: the responder's KE in the group of ours (RFC 7296 1.3.1).
        let shared = match (suite.group, asked.dh, found.ke) {
            (None, _, _) => None,
            (Some(g), Some(dh), Some(ke)) if dh.group() == g && ke.group == g.number() => {
                let Ok(secret) = dh.agree(&ke.data) else {
                    return Err((NotifyType::InvalidSyntax, true));
                };
                Some(secret)
            }
            _ => return Err((NotifyType::NoProposalChosen, true)),
        };
        // The mode we asked for, or a refusal (fail closed; RFC 7296
        // 1.3.1 lets the initiator delete a CHILD_SA in the wrong mode).
        if transport != (asked.mode == Mode::Transport) {
            return Err((NotifyType::NoProposalChosen, true));
        }
        if !within(tsi, asked.local_ts) || !within(tsr, asked.remote_ts) {
            return Err((NotifyType::TsUnacceptable, true));
        }
        Ok(NewChild {
            inbound_spi: asked.inbound_spi,
            outbound_spi,
            suite,
            mode: asked.mode,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            ni: asked.ni,
            nr,
            shared,
            exchange_initiator: true,
            rekeys: asked.rekeys,
        })
    }

    /// Installs an accepted CHILD_SA, or reports the failure and deletes
    /// what the responder may have installed.
    fn child_outcome(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        inbound_spi: u32,
        child: Result<NewChild, (NotifyType, bool)>,
    ) -> Result<(), IkeError> {
        match child {
            Ok(c) => self.child_up(now, sa, c),
            Err((notify, delete)) => {
                self.out.events.push_back(Event::ChildSaFailed {
                    ike: IkeSaId(sa.id),
                    name: self.config.peer.name.clone(),
                    notify,
                });
                if delete {
                    // The responder installed a CHILD_SA we cannot accept
                    // (fail closed): delete it (RFC 7296 1.4.1).
                    self.request_child_delete(now, sa, inbound_spi)?;
                }
                Ok(())
            }
        }
    }

    /// An IKE_SA_INIT request (responder, RFC 7296 1.2). Nothing is kept
    /// for COOKIE, NO_PROPOSAL_CHOSEN and INVALID_KE_PAYLOAD answers.
    fn responder_init(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
        local: SocketAddr,
        bytes: &[u8],
        msg: Message,
    ) -> Result<(), IkeError> {
        let h = msg.header;
        if let Some(id) = self.by_initiator.get(&(remote, h.spi_i)) {
            match self.sas.get(id) {
                Some(sa) if sa.init_request == bytes => {
                    let resp = sa.init_response.clone();
                    self.out.counters.responses_resent += 1;
                    self.out.transmits.push_back(Transmit {
                        remote,
                        local,
                        contents: resp,
                    });
                }
                _ => self.out.drop(DropReason::DuplicateInitiatorSpi),
            }
            return Ok(());
        }
        self.out
            .counters
            .requests_received
            .bump(ExchangeType::IkeSaInit);
        self.out.count_notifies_received(&msg.payloads);
        let reply = |this: &mut Endpoint, payload: Payload| {
            this.stateless_reply(&h, remote, local, payload)
        };
        let found = Found::of(&msg.payloads);
        let offer = found.sa;
        let ke = found.ke;
        let nonce = found.nonce;
        let (Some(offer), Some(ke), Some(ni)) = (offer, ke, nonce) else {
            return reply(self, notify(NotifyType::InvalidSyntax, Vec::new()));
        };
        let half_open = self.half_open_count();
        if half_open >= self.config.max_half_open {
            self.out.drop(DropReason::HalfOpenLimit);
            return Ok(());
        }
        if half_open >= self.config.cookie_threshold {
            // RFC 7296 2.6: the cookie must be the first payload.
            let expect = cookie(&self.cookie_secret, 0, ni, remote.ip(), h.spi_i);
            let got = match msg.payloads.first() {
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::Cookie => Some(&n.data),
                _ => None,
            };
            if !got.is_some_and(|g| ct_eq(g, &expect)) {
                return reply(self, notify(NotifyType::Cookie, expect));
            }
        }
        let Some((number, suite)) =
            select_ike(offer, &self.config.peer.ike_proposals, Some(ke.group))
        else {
            return reply(self, notify(NotifyType::NoProposalChosen, Vec::new()));
        };
        if suite.group.number() != ke.group {
            let group = suite.group.number().to_be_bytes().to_vec();
            return reply(self, notify(NotifyType::InvalidKePayload, group));
        }
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let public = dh.public_value().to_vec();
        let Ok(shared) = dh.agree(&ke.data) else {
            return reply(self, notify(NotifyType::InvalidSyntax, Vec::new()));
        };
        let spi_r = self.new_ike_spi()?;
        let nr = self.nonce()?;
        let keys = derive_ike_keys(&suite, ni, &nr, &shared, h.spi_i, spi_r)?;
        let mut sa = IkeSa {
            id: spi_r,
            initiator: false,
            spi_i: h.spi_i,
            spi_r,
            local,
            remote,
            state: State::HalfOpen,
            group: suite.group,
            dh: None,
            suite: Some(suite),
            ni: ni.clone(),
            nr: nr.clone(),
            init_request: bytes.to_vec(),
            init_response: Vec::new(),
            cookie: None,
            cookie_rounds: 0,
            sk_out: Some(SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar)),
            sk_in: Some(SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai)),
            keys: Some(keys),
            next_message_id: 0,
            pending: None,
            queued: VecDeque::new(),
            peer_message_id: 1,
            last_response: None,
            children: Vec::new(),
            first_child_spi: 0,
            created: now,
            last_heard: now,
            nat_local: false,
            nat_remote: false,
            announced: false,
            rekey_at: Timestamp(u64::MAX),
            pending_dh: Vec::new(),
            expire_at: None,
        };
        Self::detect_nat(&mut sa, &msg.payloads, 0);
        let out = [
            Payload::Sa(SaPayload {
                proposals: vec![ike_reply(number, Vec::new(), &suite)],
            }),
            Payload::Ke(KePayload {
                group: suite.group.number(),
                data: public,
            }),
            Payload::Nonce(nr),
            notify(
                NotifyType::NatDetectionSourceIp,
                nat_detection_hash(h.spi_i, spi_r, local).to_vec(),
            ),
            notify(
                NotifyType::NatDetectionDestinationIp,
                nat_detection_hash(h.spi_i, spi_r, remote).to_vec(),
            ),
        ];
        self.respond(&mut sa, ExchangeType::IkeSaInit, 0, &out)?;
        sa.init_response = sa
            .last_response
            .as_ref()
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        self.by_initiator.insert((remote, h.spi_i), spi_r);
        self.sas.insert(spi_r, sa);
        Ok(())
    }

    /// An IKE_SA_INIT answer that keeps no state: one notification.
    fn stateless_reply(
        &mut self,
        h: &HeaderRepr,
        remote: SocketAddr,
        local: SocketAddr,
        payload: Payload,
    ) -> Result<(), IkeError> {
        let payloads = [payload];
        self.out.count_notifies_sent(&payloads);
        let header = HeaderRepr {
            spi_r: 0,
            flags: Flags::new(false, true),
            ..*h
        };
        let contents = Message {
            header,
            payloads: payloads.to_vec(),
        }
        .to_vec()?;
        self.out
            .counters
            .responses_sent
            .bump(ExchangeType::IkeSaInit);
        self.out.transmits.push_back(Transmit {
            remote,
            local,
            contents,
        });
        Ok(())
    }

    /// The initiator's IKE_AUTH (responder side, RFC 7296 1.2, 2.15).
    fn on_auth_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let idi = found.idi;
        let auth = found.auth;
        let (Some(idi), Some(auth)) = (idi, auth) else {
            let n = [notify(NotifyType::InvalidSyntax, Vec::new())];
            self.respond(sa, h.exchange, h.message_id, &n)?;
            return Ok(After::Remove);
        };
        if !self.verify_auth(sa, idi, auth, true) {
            // RFC 7296 2.21.2: AUTHENTICATION_FAILED in the IKE_AUTH
            // response, and no IKE SA.
            let n = [notify(NotifyType::AuthenticationFailed, Vec::new())];
            self.respond(sa, h.exchange, h.message_id, &n)?;
            return Ok(After::Remove);
        }
        let peer = &self.config.peer;
        let idr = peer.local_id.to_payload();
        let Some(keys) = &sa.keys else {
            return Ok(After::Remove);
        };
        let our_auth = psk_auth(
            &peer.psk,
            &sa.init_response,
            &sa.ni,
            &keys.sk_pr,
            &idr.body(),
        );
        let mut out = vec![
            Payload::IdR(idr),
            Payload::Auth(AuthPayload {
                method: AUTH_PSK,
                data: our_auth.expose().to_vec(),
            }),
        ];
        let nonces = (sa.ni.clone(), sa.nr.clone());
        let child = self.negotiate_child(sa, payloads, nonces, None, Pfs::Ignore)?;
        match &child {
            Some(Ok(c)) => out.extend(c.reply.iter().cloned()),
            Some(Err((t, data))) => out.push(notify(*t, data.clone())),
            None => {}
        }
        self.respond(sa, h.exchange, h.message_id, &out)?;
        self.ike_sa_up(now, sa);
        match child {
            Some(Ok(c)) => self.child_up(now, sa, c.child)?,
            Some(Err((notify, _))) => self.out.events.push_back(Event::ChildSaFailed {
                ike: IkeSaId(sa.id),
                name: self.config.peer.name.clone(),
                notify,
            }),
            None => {}
        }
        if find_notify(payloads, NotifyType::InitialContact).is_some() {
            self.initial_contact(sa.id);
        }
        Ok(After::Keep)
    }

    /// RFC 7296 2.4: INITIAL_CONTACT means the peer has no other IKE SA
    /// with us; ours with the same peer identity are gone without a
    /// Delete. This endpoint has one peer configuration, so that is every
    /// other established IKE SA.
    fn initial_contact(&mut self, keep: u64) {
        let stale: Vec<u64> = self
            .sas
            .iter()
            .filter(|(id, sa)| **id != keep && sa.state == State::Established)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(mut sa) = self.sas.remove(&id) {
                self.out
                    .close(&mut sa, &self.config.peer.name, DownReason::InitialContact);
                self.forget(&sa);
            }
        }
    }

    /// The responder's CHILD_SA negotiation: `None` when no CHILD_SA was
    /// asked for, `Some(Err)` with the error to return.
    fn negotiate_child(
        &self,
        sa: &IkeSa,
        payloads: &[Payload],
        (ni, nr): (Vec<u8>, Vec<u8>),
        rekeys: Option<u32>,
        pfs: Pfs,
    ) -> Result<Option<Result<ChildReply, ChildRefusal>>, IkeError> {
        let found = Found::of(payloads);
        let offer = found.sa;
        let tsi = found.tsi;
        let tsr = found.tsr;
        let Some(offer) = offer else {
            return Ok(None);
        };
        let peer = &self.config.peer;
        let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
            return Ok(Some(Err((NotifyType::TsUnacceptable, Vec::new()))));
        };
        let Some((number, outbound_spi, suite)) = select_esp(offer, &peer.esp_proposals, pfs)
        else {
            return Ok(Some(Err((NotifyType::NoProposalChosen, Vec::new()))));
        };
        let remote_ts = narrow(tsi, &peer.remote_ts);
        let local_ts = narrow(tsr, &peer.local_ts);
        if remote_ts.is_empty() || local_ts.is_empty() {
            return Ok(Some(Err((NotifyType::TsUnacceptable, Vec::new()))));
        }
        let transport = find_notify(payloads, NotifyType::UseTransportMode).is_some();
        // RFC 7296 1.3.1: transport mode only when asked for; a peer that
        // wants tunnel mode where we are configured for transport is
        // refused rather than given a mode we were not configured for.
        let mode = match (peer.mode, transport) {
            (Mode::Transport, true) => Mode::Transport,
            (Mode::Tunnel, _) => Mode::Tunnel,
            (Mode::Transport, false) => {
                return Ok(Some(Err((NotifyType::NoProposalChosen, Vec::new()))))
            }
        };
        // PFS (RFC 7296 1.3.1): a fresh Diffie-Hellman exchange in the
        // chosen group, which the peer's KE payload must use (1.3).
        let mut shared = None;
        let mut ke_reply = None;
        if let Some(g) = suite.group {
            let Some(ke) = found.ke.filter(|k| k.group == g.number()) else {
                let want = g.number().to_be_bytes().to_vec();
                return Ok(Some(Err((NotifyType::InvalidKePayload, want))));
            };
            let dh = DhPrivate::generate(g, &self.rng)?;
            ke_reply = Some(Payload::Ke(KePayload {
                group: g.number(),
                data: dh.public_value().to_vec(),
            }));
            let Ok(secret) = dh.agree(&ke.data) else {
                return Ok(Some(Err((NotifyType::InvalidSyntax, Vec::new()))));
            };
            shared = Some(secret);
        }
        let inbound_spi = self.new_child_spi(sa)?;
        let mut reply = vec![
            Payload::Sa(SaPayload {
                proposals: vec![esp_reply(number, inbound_spi, &suite)],
            }),
            Payload::TsI(remote_ts.clone()),
            Payload::TsR(local_ts.clone()),
        ];
        if mode == Mode::Transport {
            reply.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        Ok(Some(Ok(ChildReply {
            child: NewChild {
                inbound_spi,
                outbound_spi,
                suite,
                mode,
                local_ts,
                remote_ts,
                ni,
                nr,
                shared,
                exchange_initiator: false,
                rekeys,
            },
            reply,
            ke: ke_reply,
        })))
    }

    /// Rekeys IKE SA `id` (RFC 7296 1.3.2, 2.18): the new IKE SA takes over
    /// the CHILD_SAs and is reported with [`Event::IkeSaRekeyed`]; the old
    /// one is deleted.
    pub fn rekey_ike(&mut self, now: Timestamp, id: IkeSaId) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.rekey_ike_of(now, sa))
    }

    fn rekey_ike_of(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        let suite = match (sa.state, sa.suite) {
            (State::Established, Some(s)) => s,
            _ => return Err(IkeError::NotEstablished(IkeSaId(sa.id))),
        };
        sa.rekey_at = Timestamp(u64::MAX);
        let spi = self.new_ike_spi()?;
        let ni = self.nonce()?;
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let ke = KePayload {
            group: suite.group.number(),
            data: dh.public_value().to_vec(),
        };
        sa.pending_dh.push((ni.clone(), dh));
        let proposals = self.ike_offer(spi.to_be_bytes().to_vec());
        let out = vec![
            Payload::Sa(proposals),
            Payload::Nonce(ni.clone()),
            Payload::Ke(ke),
        ];
        self.request(
            now,
            sa,
            ExchangeType::CreateChildSa,
            out,
            RequestKind::RekeyIke { spi, ni },
        )
    }

    /// The IKE SA that replaces `old` after a rekey: the CHILD_SAs move to
    /// it, message IDs start again at zero, and the rekey's initiator is
    /// its original initiator (RFC 7296 2.18). `old` is left to be deleted.
    #[allow(clippy::too_many_arguments)]
    fn replace_ike_sa(
        &mut self,
        now: Timestamp,
        old: &mut IkeSa,
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        suite: IkeSuite,
        keys: IkeKeys,
        (ni, nr): (Vec<u8>, Vec<u8>),
    ) {
        let id = if initiator { spi_i } else { spi_r };
        let (out, inn) = if initiator {
            (
                SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai),
                SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar),
            )
        } else {
            (
                SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar),
                SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai),
            )
        };
        let sa = IkeSa {
            id,
            initiator,
            spi_i,
            spi_r,
            local: old.local,
            remote: old.remote,
            state: State::Established,
            group: suite.group,
            dh: None,
            suite: Some(suite),
            ni,
            nr,
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            cookie_rounds: 0,
            keys: Some(keys),
            sk_out: Some(out),
            sk_in: Some(inn),
            next_message_id: 0,
            pending: None,
            queued: VecDeque::new(),
            peer_message_id: 0,
            last_response: None,
            children: std::mem::take(&mut old.children),
            first_child_spi: 0,
            created: now,
            last_heard: now,
            nat_local: old.nat_local,
            nat_remote: old.nat_remote,
            announced: true,
            rekey_at: now.saturating_add(self.config.peer.lifetimes.ike),
            pending_dh: Vec::new(),
            expire_at: None,
        };
        self.out.events.push_back(Event::IkeSaRekeyed {
            old: IkeSaId(old.id),
            new: IkeSaId(id),
            spi_i,
            spi_r,
        });
        // The owner now knows the new one; the old one ends quietly.
        old.announced = false;
        old.state = State::Deleting;
        self.sas.insert(id, sa);
    }

    /// The peer's request to rekey the IKE SA (responder, RFC 7296 1.3.2).
    fn on_ike_rekey_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let reply = |this: &mut Endpoint, sa: &mut IkeSa, t: NotifyType, data: Vec<u8>| {
            this.respond(sa, h.exchange, h.message_id, &[notify(t, data)])
                .map(|()| After::Keep)
        };
        let ours_pending = matches!(
            sa.pending.as_ref().map(|p| &p.kind),
            Some(RequestKind::RekeyIke { .. } | RequestKind::DeleteIke)
        );
        if ours_pending || sa.state != State::Established {
            // RFC 7296 2.25: a collision with our own rekey or delete. The
            // nonce comparison of 2.8.2 is not done: the peer retries.
            return reply(self, sa, NotifyType::TemporaryFailure, Vec::new());
        }
        let found = Found::of(payloads);
        let (Some(offer), Some(ni), Some(ke), Some(keys)) =
            (found.sa, found.nonce, found.ke, &sa.keys)
        else {
            return reply(self, sa, NotifyType::InvalidSyntax, Vec::new());
        };
        let proposals = &self.config.peer.ike_proposals;
        let Some((number, peer_spi, suite)) =
            select_ike_with_spi(offer, proposals, Some(ke.group), 8)
        else {
            return reply(self, sa, NotifyType::NoProposalChosen, Vec::new());
        };
        if suite.group.number() != ke.group {
            let group = suite.group.number().to_be_bytes().to_vec();
            return reply(self, sa, NotifyType::InvalidKePayload, group);
        }
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let public = dh.public_value().to_vec();
        let Ok(shared) = dh.agree(&ke.data) else {
            return reply(self, sa, NotifyType::InvalidSyntax, Vec::new());
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(&peer_spi);
        let spi_i = u64::from_be_bytes(b);
        let spi_r = self.new_ike_spi()?;
        let nr = self.nonce()?;
        let ni = ni.clone();
        let keys = derive_rekeyed_ike_keys(&suite, &keys.sk_d, &ni, &nr, &shared, spi_i, spi_r)?;
        let out = [
            Payload::Sa(SaPayload {
                proposals: vec![ike_reply(number, spi_r.to_be_bytes().to_vec(), &suite)],
            }),
            Payload::Nonce(nr.clone()),
            Payload::Ke(KePayload {
                group: suite.group.number(),
                data: public,
            }),
        ];
        self.respond(sa, h.exchange, h.message_id, &out)?;
        self.replace_ike_sa(now, sa, false, (spi_i, spi_r), suite, keys, (ni, nr));
        // The rekey's initiator deletes the old IKE SA.
        sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
        Ok(After::Keep)
    }

    /// The answer to our IKE SA rekey: the new IKE SA takes over and the
    /// old one is deleted; a refusal leaves the old one and retries later.
    fn on_ike_rekey_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
        spi_i: u64,
        ni: Vec<u8>,
    ) -> Result<After, IkeError> {
        let dh = Self::take_dh(sa, &ni);
        let found = Found::of(payloads);
        let accepted = match (first_error(payloads), found.sa, found.nonce, found.ke, dh) {
            (None, Some(offer), Some(nr), Some(ke), Some(dh)) => {
                accept_ike_reply_with_spi(offer, &self.config.peer.ike_proposals, 8)
                    .filter(|(_, s)| s.group == dh.group() && ke.group == s.group.number())
                    .and_then(|(spi, s)| {
                        let shared = dh.agree(&ke.data).ok()?;
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&spi);
                        Some((u64::from_be_bytes(b), s, shared, nr.clone()))
                    })
            }
            _ => None,
        };
        let (Some((spi_r, suite, shared, nr)), Some(keys)) = (accepted, &sa.keys) else {
            sa.rekey_at = now.saturating_add(self.retry_delay()?);
            return Ok(After::Keep);
        };
        let keys = derive_rekeyed_ike_keys(&suite, &keys.sk_d, &ni, &nr, &shared, spi_i, spi_r)?;
        self.replace_ike_sa(now, sa, true, (spi_i, spi_r), suite, keys, (ni, nr));
        let del = Payload::Delete(DeletePayload {
            protocol_id: PROTO_IKE,
            spi_size: 0,
            spis: Vec::new(),
        });
        self.request(
            now,
            sa,
            ExchangeType::Informational,
            vec![del],
            RequestKind::DeleteIke,
        )?;
        Ok(After::Keep)
    }

    /// A CREATE_CHILD_SA request (responder, RFC 7296 1.3): a new or a
    /// rekeyed CHILD_SA (1.3.1, 1.3.3). Rekeying the IKE SA (1.3.2) and PFS
    /// are not supported: such proposals get NO_PROPOSAL_CHOSEN.
    fn on_create_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let refuse = |this: &mut Endpoint, sa: &mut IkeSa, n: NotifyPayload| {
            this.respond(sa, h.exchange, h.message_id, &[Payload::Notify(n)])
                .map(|()| After::Keep)
        };
        if found
            .sa
            .is_some_and(|o| o.proposals.iter().any(|p| p.protocol == ProtocolId::Ike))
        {
            return self.on_ike_rekey_request(now, sa, h, payloads);
        }
        let rekeys = match find_notify(payloads, NotifyType::RekeySa) {
            None => None,
            Some(n) => {
                // The SPI the requester receives on: our outbound SPI.
                let old = crate::wire::spi32(&n.spi).and_then(|spi| {
                    sa.children
                        .iter()
                        .find(|c| c.outbound_spi == spi && !c.deleting)
                });
                match old {
                    Some(c) => Some(c.inbound_spi),
                    None => {
                        // RFC 7296 2.25: CHILD_SA_NOT_FOUND, naming the SPI.
                        let mut n = n.clone();
                        n.notify_type = NotifyType::ChildSaNotFound;
                        n.data.clear();
                        return refuse(self, sa, n);
                    }
                }
            }
        };
        let Some(ni) = found.nonce.cloned() else {
            return refuse(
                self,
                sa,
                NotifyPayload::new(NotifyType::InvalidSyntax, Vec::new()),
            );
        };
        let nr = self.nonce()?;
        let pfs = found.ke.map_or(Pfs::Without, |k| Pfs::With(k.group));
        let nonces = (ni.clone(), nr.clone());
        let child = match self.negotiate_child(sa, payloads, nonces, rekeys, pfs)? {
            None => Err((NotifyType::InvalidSyntax, Vec::new())),
            Some(c) => c,
        };
        match child {
            Err((t, data)) => {
                self.out.events.push_back(Event::ChildSaFailed {
                    ike: IkeSaId(sa.id),
                    name: self.config.peer.name.clone(),
                    notify: t,
                });
                refuse(self, sa, NotifyPayload::new(t, data))
            }
            Ok(ChildReply {
                child,
                mut reply,
                ke,
            }) => {
                // SA, Nr, [KEr,] TSi, TSr (RFC 7296 1.3.1).
                reply.insert(1, Payload::Nonce(nr.clone()));
                if let Some(ke) = ke {
                    reply.insert(2, ke);
                }
                self.respond(sa, h.exchange, h.message_id, &reply)?;
                if let Some(old) = rekeys {
                    if let Some(c) = sa.children.iter_mut().find(|c| c.inbound_spi == old) {
                        c.rekeyed_by_peer = Some((ni, nr));
                        // The peer rekeyed it; it deletes the old one.
                        c.rekey_at = Timestamp(u64::MAX);
                    }
                }
                self.child_up(now, sa, child)?;
                Ok(After::Keep)
            }
        }
    }

    /// Rekeys the CHILD_SA with our `inbound_spi` (RFC 7296 1.3.3, 2.8):
    /// the new one is reported when the peer answers, then the old one is
    /// deleted.
    pub fn rekey_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.rekey_child_of(now, sa, inbound_spi))
    }

    fn rekey_child_of(&mut self, now: Timestamp, sa: &mut IkeSa, old: u32) -> Result<(), IkeError> {
        if sa.state != State::Established {
            return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
        }
        let c = sa
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == old && !c.deleting)
            .ok_or(IkeError::UnknownChildSa(old))?;
        c.rekey_at = Timestamp(u64::MAX);
        let c = c.clone();
        self.request_child(now, sa, Some(old), c.mode, c.local_ts, c.remote_ts)
    }

    /// Creates one more CHILD_SA on IKE SA `id` with the given selectors
    /// (RFC 7296 1.3.1), narrowed by the peer; it is reported when the
    /// peer answers.
    pub fn create_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<(), IkeError> {
        let mode = self.config.peer.mode;
        self.with_sa(id, |this, sa| {
            if sa.state != State::Established {
                return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
            }
            this.request_child(now, sa, None, mode, local_ts, remote_ts)
        })
    }

    /// A CREATE_CHILD_SA request: [N(REKEY_SA),] [N(USE_TRANSPORT_MODE),]
    /// SA, Ni, [KEi,] TSi, TSr (RFC 7296 1.3.1, 1.3.3), with PFS in the
    /// first group we are configured for, if any.
    fn request_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        old: Option<u32>,
        mode: Mode,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<(), IkeError> {
        let inbound_spi = self.new_child_spi(sa)?;
        let ni = self.nonce()?;
        let group = self
            .config
            .peer
            .esp_proposals
            .first()
            .and_then(|p| p.groups.first());
        let ke = match group {
            Some(g) => {
                let dh = DhPrivate::generate(*g, &self.rng)?;
                let ke = Payload::Ke(KePayload {
                    group: g.number(),
                    data: dh.public_value().to_vec(),
                });
                sa.pending_dh.push((ni.clone(), dh));
                Some(ke)
            }
            None => None,
        };
        let mut out = Vec::new();
        if let Some(old) = old {
            out.push(Payload::Notify(NotifyPayload {
                protocol_id: PROTO_ESP,
                spi: old.to_be_bytes().to_vec(),
                notify_type: NotifyType::RekeySa,
                data: Vec::new(),
            }));
        }
        if mode == Mode::Transport {
            out.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        out.push(Payload::Sa(self.esp_offer(inbound_spi, true)));
        out.push(Payload::Nonce(ni.clone()));
        out.extend(ke);
        out.push(Payload::TsI(local_ts.clone()));
        out.push(Payload::TsR(remote_ts.clone()));
        let kind = RequestKind::CreateChild {
            old,
            inbound_spi,
            ni,
            mode,
            local_ts,
            remote_ts,
        };
        self.request(now, sa, ExchangeType::CreateChildSa, out, kind)
    }

    /// The answer to our CREATE_CHILD_SA. A new CHILD_SA is reported; in
    /// a rekey the old one is then deleted, unless the peer rekeyed it at
    /// the same time and its rekey wins: then ours is the redundant one
    /// and is deleted (RFC 7296 2.8.1: the CHILD_SA made with the lowest of
    /// the four nonces is deleted by the side that created it).
    fn on_create_child_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
        asked: Asked<'_>,
    ) -> Result<After, IkeError> {
        let (inbound_spi, ni) = (asked.inbound_spi, asked.ni.clone());
        let old = match asked.rekeys {
            None => None,
            Some(old) => match sa.children.iter().find(|c| c.inbound_spi == old) {
                Some(c) => Some(c.clone()),
                None => {
                    // Deleted meanwhile: what the peer made is not wanted
                    // either.
                    match self.accept_child_reply(payloads, asked, None) {
                        Ok(_) => self.request_child_delete(now, sa, inbound_spi)?,
                        Err(e) => self.child_outcome(now, sa, inbound_spi, Err(e))?,
                    }
                    return Ok(After::Keep);
                }
            },
        };
        let child = self.accept_child_reply(payloads, asked, None);
        let nr = match &child {
            Ok(n) => n.nr.clone(),
            Err(_) => Vec::new(),
        };
        let ok = child.is_ok();
        let retry = self.retry_delay()?;
        self.child_outcome(now, sa, inbound_spi, child)?;
        let Some(old) = old else {
            return Ok(After::Keep);
        };
        if !ok {
            if let Some(c) = sa
                .children
                .iter_mut()
                .find(|c| c.inbound_spi == old.inbound_spi)
            {
                // Try again later rather than never.
                c.rekey_at = now.saturating_add(retry);
            }
            return Ok(After::Keep);
        }
        let ours_lowest = old
            .rekeyed_by_peer
            .as_ref()
            .is_some_and(|(pni, pnr)| ni.min(nr) < pni.clone().min(pnr.clone()));
        let redundant = if ours_lowest {
            inbound_spi
        } else {
            old.inbound_spi
        };
        self.delete_child_of(now, sa, redundant)?;
        Ok(After::Keep)
    }

    /// An INFORMATIONAL request (RFC 7296 1.4): Deletes are answered with
    /// the Deletes of our halves; anything else (liveness) with an empty
    /// response.
    fn on_informational(
        &mut self,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let mut delete_ike = false;
        let mut ours = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            match d.protocol_id {
                PROTO_IKE => delete_ike = true,
                PROTO_ESP => {
                    for spi in d.spis.iter().filter_map(|s| crate::wire::spi32(s)) {
                        let Some(i) = sa.children.iter().position(|c| c.outbound_spi == spi) else {
                            continue;
                        };
                        // Both sides deleting at once (RFC 7296 1.4.1): ours
                        // goes when our request is answered, and is not
                        // named in this response.
                        if sa.children[i].deleting {
                            continue;
                        }
                        let c = sa.children.remove(i);
                        self.out.child_deleted(sa.id, &self.config.peer.name, &c);
                        ours.push(c.inbound_spi.to_be_bytes().to_vec());
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if !delete_ike && !ours.is_empty() {
            out.push(Payload::Delete(DeletePayload {
                protocol_id: PROTO_ESP,
                spi_size: 4,
                spis: ours,
            }));
        }
        self.respond(sa, h.exchange, h.message_id, &out)?;
        if delete_ike {
            return Ok(self.fail(sa, DownReason::DeletedByPeer));
        }
        Ok(After::Keep)
    }

    /// Retransmissions, give-ups, half-open expiry and liveness checks due
    /// at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<u64> = self
            .sas
            .values()
            .filter(|sa| self.deadline(sa).is_some_and(|d| d <= now))
            .map(|sa| sa.id)
            .collect();
        for id in due {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            match self.timeout_sa(now, &mut sa) {
                Ok(After::Keep) => {
                    self.sas.insert(id, sa);
                }
                Ok(After::Remove) => self.forget(&sa),
                Err(e) => {
                    self.local_failure(e);
                    self.sas.insert(id, sa);
                }
            }
        }
    }

    /// The CHILD_SA due for rekeying first.
    fn next_rekey(sa: &IkeSa) -> Option<&ChildSa> {
        sa.children
            .iter()
            .filter(|c| !c.deleting)
            .min_by_key(|c| c.rekey_at)
    }

    fn timeout_sa(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<After, IkeError> {
        if sa.state == State::HalfOpen
            && now >= sa.created.saturating_add(self.config.half_open_timeout)
        {
            self.out.counters.half_open_expired += 1;
            return Ok(After::Remove);
        }
        let retransmit = self.config.peer.retransmit;
        if let Some(p) = &mut sa.pending {
            if now >= p.next_at {
                if p.retransmits >= retransmit.tries {
                    return Ok(self.fail(sa, DownReason::Timeout));
                }
                p.retransmits += 1;
                p.interval = (p.interval * 2).min(retransmit.max_interval);
                p.next_at = now.saturating_add(p.interval);
                let bytes = p.bytes.clone();
                self.out.counters.retransmissions += 1;
                self.out.send(sa, bytes);
            }
            return Ok(After::Keep);
        }
        if sa.expire_at.is_some_and(|t| t <= now) {
            return Ok(self.fail(sa, DownReason::DeletedLocally));
        }
        if sa.state == State::Established && sa.pending.is_none() && sa.rekey_at <= now {
            self.rekey_ike_of(now, sa)?;
            return Ok(After::Keep);
        }
        if sa.state == State::Established {
            if let Some(c) = Self::next_rekey(sa).filter(|c| c.rekey_at <= now) {
                let old = c.inbound_spi;
                self.rekey_child_of(now, sa, old)?;
                return Ok(After::Keep);
            }
        }
        if let (State::Established, Some(iv)) = (sa.state, self.config.peer.liveness) {
            if now >= sa.last_heard.saturating_add(iv) {
                self.request(
                    now,
                    sa,
                    ExchangeType::Informational,
                    Vec::new(),
                    RequestKind::Liveness,
                )?;
            }
        }
        Ok(After::Keep)
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
