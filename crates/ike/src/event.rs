//! What the core tells its owner: events, datagrams to send, counters.

use crate::certs::AuthFailure;
use crate::config::{Identity, Mode};
use crate::crypto::DirectionKeys;
use crate::suite::{EspSuite, IkeSuite};
use crate::wire::{ExchangeType, NotifyType, TrafficSelector};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// An IKE SA, named by the SPI this side chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

/// A datagram to send: an IKE message, to which the caller prepends the
/// four-octet non-ESP marker when it leaves from port 4500 (RFC 3948 2.2),
/// or a NAT-keepalive ([`Transmit::is_nat_keepalive`]), which leaves as
/// it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub remote: SocketAddr,
    /// Source (the address the IKE SA runs on).
    pub local: SocketAddr,
    /// The IKE message.
    pub contents: Vec<u8>,
}

/// A NAT-keepalive: the single octet 0xFF (RFC 3948 2.3). No IKE message
/// is that short (its header alone is 28 octets), so a receiver tells the
/// two apart by length, and so does the owner sending them.
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];

impl Transmit {
    /// Whether this is a NAT-keepalive, sent without the non-ESP marker.
    pub fn is_nat_keepalive(&self) -> bool {
        self.contents == NAT_KEEPALIVE
    }
}

/// Why an IKE SA went down (or never came up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer answered with this error notification.
    PeerNotify(NotifyType),
    /// The peer's AUTH or identity did not verify.
    AuthenticationFailed,
    /// The peer's answer was not one we proposed or is malformed.
    InvalidReply,
    /// No answer after every retransmission (RFC 7296 2.4).
    Timeout,
    /// The peer deleted the IKE SA.
    DeletedByPeer,
    /// We deleted it.
    DeletedLocally,
    /// The same peer authenticated a new IKE SA with INITIAL_CONTACT.
    InitialContact,
    /// It reached its hard lifetime without a rekey (see
    /// [`crate::Lifetimes::hard`]).
    Expired,
}

/// A CHILD_SA that is ready to install: SPIs, selectors, algorithms and
/// keys of both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaEstablished {
    /// Its IKE SA.
    pub ike: IkeSaId,
    /// The connection's name.
    pub name: String,
    /// The child configuration it keys ([`crate::ChildConfig::name`]).
    pub child: String,
    /// The SPI we chose: ESP arriving with it is this SA's.
    pub inbound_spi: u32,
    /// The peer's SPI: ESP we send carries it.
    pub outbound_spi: u32,
    /// Tunnel or transport.
    pub mode: Mode,
    /// Our side's selectors, as narrowed.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's selectors, as narrowed.
    pub remote_ts: Vec<TrafficSelector>,
    /// Algorithms and key sizes.
    pub suite: EspSuite,
    /// Keys of ESP we receive.
    pub inbound: DirectionKeys,
    /// Keys of ESP we send.
    pub outbound: DirectionKeys,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// A NAT was detected: ESP goes in UDP between `local` and `remote`
    /// (RFC 3948).
    pub udp_encapsulation: bool,
    /// Whether we initiated the exchange that created it (its
    /// "initiator" in the key order of RFC 7296 2.17).
    pub exchange_initiator: bool,
    /// The inbound SPI of the CHILD_SA this one replaces (a rekey); the
    /// old one stays until reported deleted.
    pub rekeys: Option<u32>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An IKE SA is authenticated.
    IkeSaUp {
        /// Which.
        ike: IkeSaId,
        /// The name of its peer configuration.
        peer: String,
        /// The identity the peer proved (its configured `remote_id`).
        remote_id: Identity,
        /// Our address.
        local: SocketAddr,
        /// The peer's address (after NAT detection's move to port 4500).
        remote: SocketAddr,
        /// Whether we initiated it.
        initiator: bool,
        /// Initiator's SPI.
        spi_i: u64,
        /// Responder's SPI.
        spi_r: u64,
        /// Algorithms.
        suite: IkeSuite,
        /// Our address is translated (RFC 7296 2.23).
        nat_local: bool,
        /// The peer's address is translated.
        nat_remote: bool,
    },
    /// An IKE SA was rekeyed (RFC 7296 1.3.2): `new` replaces `old`, whose
    /// CHILD_SAs it took over; no `IkeSaDown` follows for `old`.
    IkeSaRekeyed {
        /// The replaced IKE SA.
        old: IkeSaId,
        /// The new one.
        new: IkeSaId,
        /// Its initiator's SPI.
        spi_i: u64,
        /// Its responder's SPI.
        spi_r: u64,
    },
    /// The peer of an established IKE SA behind a NAT came from another
    /// address or port (a new mapping of the NAT, RFC 7296 2.23): IKE
    /// follows it, and its CHILD_SAs' UDP encapsulation (RFC 3948) must
    /// too.
    IkeSaMoved {
        /// Which.
        ike: IkeSaId,
        /// Our address, as before.
        local: SocketAddr,
        /// The peer's new address and port.
        remote: SocketAddr,
    },
    /// An IKE SA is gone; its CHILD_SAs were reported deleted first.
    IkeSaDown {
        /// Which.
        ike: IkeSaId,
        /// Why.
        reason: DownReason,
    },
    /// A CHILD_SA to install.
    ChildSaEstablished(Box<ChildSaEstablished>),
    /// A CHILD_SA could not be created; the IKE SA stays.
    ChildSaFailed {
        /// Its IKE SA.
        ike: IkeSaId,
        /// The connection's name.
        name: String,
        /// The child configuration it was for; empty when we refused a
        /// peer's request that fit none of ours.
        child: String,
        /// The error sent or received.
        notify: NotifyType,
    },
    /// A CHILD_SA to remove.
    ChildSaDeleted {
        /// Its IKE SA.
        ike: IkeSaId,
        /// The connection's name.
        name: String,
        /// The child configuration it keyed.
        child: String,
        /// Our SPI.
        inbound_spi: u32,
        /// The peer's SPI.
        outbound_spi: u32,
    },
}

/// Why a datagram was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a well-formed IKE message.
    Malformed,
    /// Major version other than 2.
    BadMajorVersion,
    /// No IKE SA has this SPI.
    UnknownSpi,
    /// A request out of the window, or a response to no request (2.3).
    InvalidMessageId,
    /// The SK payload did not verify (RFC 7296 3.14: silently dropped).
    IntegrityCheckFailed,
    /// An exchange not valid in the IKE SA's state.
    UnexpectedExchange,
    /// A new IKE_SA_INIT for an initiator SPI already in use.
    DuplicateInitiatorSpi,
    /// Too many half-open IKE SAs.
    HalfOpenLimit,
    /// A response that makes no sense for the request.
    InvalidResponse,
    /// A local failure (the random source) while answering.
    LocalFailure,
}

/// Messages per exchange type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerExchange {
    /// IKE_SA_INIT.
    pub ike_sa_init: u64,
    /// IKE_AUTH.
    pub ike_auth: u64,
    /// CREATE_CHILD_SA.
    pub create_child_sa: u64,
    /// INFORMATIONAL.
    pub informational: u64,
    /// Any other exchange type.
    pub other: u64,
}

impl PerExchange {
    pub(crate) fn bump(&mut self, e: ExchangeType) {
        let c = match e {
            ExchangeType::IkeSaInit => &mut self.ike_sa_init,
            ExchangeType::IkeAuth => &mut self.ike_auth,
            ExchangeType::CreateChildSa => &mut self.create_child_sa,
            ExchangeType::Informational => &mut self.informational,
            ExchangeType::Unknown(_) => &mut self.other,
        };
        *c += 1;
    }
}

/// Counters of everything the endpoint did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed in.
    pub datagrams_received: u64,
    /// Requests sent (first transmissions).
    pub requests_sent: PerExchange,
    /// Responses sent.
    pub responses_sent: PerExchange,
    /// Requests received and processed.
    pub requests_received: PerExchange,
    /// Responses received and processed.
    pub responses_received: PerExchange,
    /// Requests sent again after a timeout.
    pub retransmissions: u64,
    /// Cached responses sent again for retransmitted requests.
    pub responses_resent: u64,
    /// Notifications sent, by type.
    pub notify_sent: BTreeMap<NotifyType, u64>,
    /// Notifications received (in processed messages), by type.
    pub notify_received: BTreeMap<NotifyType, u64>,
    /// Datagrams dropped, by reason.
    pub drops: BTreeMap<DropReason, u64>,
    /// Half-open IKE SAs removed after their timeout.
    pub half_open_expired: u64,
    /// IKE SAs removed at their hard lifetime, their rekey not done.
    pub ike_sas_expired: u64,
    /// CHILD_SAs removed at their hard lifetime, their rekey not done.
    pub child_sas_expired: u64,
    /// NAT-keepalives sent (RFC 3948 2.3).
    pub nat_keepalives_sent: u64,
    /// Peers' IKE_AUTH refused (AUTHENTICATION_FAILED), by reason.
    pub auth_refused: BTreeMap<AuthFailure, u64>,
}

impl Counters {
    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(&reason).copied().unwrap_or(0)
    }

    /// Notifications of type `t` sent.
    pub fn sent(&self, t: NotifyType) -> u64 {
        self.notify_sent.get(&t).copied().unwrap_or(0)
    }

    /// Notifications of type `t` received.
    pub fn received(&self, t: NotifyType) -> u64 {
        self.notify_received.get(&t).copied().unwrap_or(0)
    }

    /// IKE_AUTH refusals counted for `why`.
    pub fn refused(&self, why: AuthFailure) -> u64 {
        self.auth_refused.get(&why).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().sum()
    }
}
