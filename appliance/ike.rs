//! IKEv2 in the appliance: a thread that owns one `bitsgw_ike::Endpoint`
//! per configured peer (one for all the `"remote": "any"` peers of a local
//! address, which IKE_AUTH's identities tell apart), its timers and its
//! clock. IKE datagrams reach it
//! from the network side's host stack (UDP 500 and 4500 on the
//! appliance's own addresses, `bitsgw_io::smoltcp_endpoint`) over bounded
//! channels, and its datagrams leave the same way, from the appliance's
//! address and never through the SPD (RFC 4301 5.1, 6).
//!
//! What the endpoints decide becomes [`SaChange`]s for the main loop, which
//! installs and removes the policy's IKE-keyed SAs by name through the
//! stage's install path (so each SA is keyed only in its owner's stage):
//! a new CHILD_SA installs its inbound SA first, then its outbound one
//! (RFC 7296 2.8: the peer may send on the new SA as soon as it has it,
//! and the SAD keeps the replaced inbound SA until the new one verifies a
//! packet); a deleted CHILD_SA's SAs are removed, so what they protected
//! is dropped (`no_sa`), never sent in clear. When an IKE SA goes down its
//! CHILD_SAs are reported deleted first, so the same holds.
//!
//! A peer keys each of its children as one CHILD_SA of its IKE SA, known
//! by the child's name (its outbound SA's): a CHILD_SA's events install,
//! move and remove that child's SAs only.
//!
//! A peer that starts on traffic (`"start": "trap"`) is initiated when the
//! stages report an acquire (RFC 4301 5.1) for a child's outbound SA (or,
//! with the IKE SA up, that child's CHILD_SA is created): one negotiation
//! at a time, and after a failed one a back-off that
//! doubles up to [`ACQUIRE_BACKOFF_MAX`] before the next acquire is acted
//! on. The packets meanwhile are dropped as `acquire_pending`.

use crate::config::{ApplianceConfig, ChildSettings, PeerAuth, PeerSettings, StartAction};
use bitsgw_ike::crypto::{DirectionKeys, Secret};
use bitsgw_ike::names::{esp_proposal, identity, ike_proposal};
use bitsgw_ike::suite::{Encryption, EspSuite};
use bitsgw_ike::wire::TrafficSelector;
use bitsgw_ike::{
    Authentication, ChildConfig, ChildSaEstablished, DownReason, Endpoint, EndpointConfig, Event,
    IkeSaId, Lifetimes, PeerConfig, Retransmit, Timestamp,
};
use bitsgw_io::smoltcp_endpoint::{IkeDatagram, IkePort, IKE_PORT};
use bitsgw_ipsec::config::{ActionConfig, PolicySet};
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::sa::{Mode as SaMode, SaParams, UdpEncap};
use bitsgw_ipsec::selector::{Addr, AddrSel, Family, ProtoSel, Range16, Selector};
use bitsgw_ipsec::AcquireSignal;
use bitsgw_wire::proto;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod acquire;
mod care_of;
mod install;
mod status;
pub(crate) mod wireshark_keys;

use acquire::Acquire;
pub use care_of::MobilityChange;
pub use status::status_text;

/// Datagrams each way between the network endpoint and the IKE thread.
pub const CHANNEL_DEPTH: usize = 256;
/// SA changes queued for the main loop.
const CHANGES_DEPTH: usize = 256;
/// How long an initiating peer waits before initiating again after its
/// IKE SA went down (or never came up).
const REINITIATE_AFTER: Duration = Duration::from_secs(5);
/// The longest the thread sleeps.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// How long a trapping peer ignores acquires after its first failed
/// negotiation; doubled after each further one.
const ACQUIRE_BACKOFF: Duration = Duration::from_secs(2);
/// The longest back-off between negotiations that acquires start.
pub const ACQUIRE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A negotiation that neither succeeded nor failed by then (no event at
/// all: it can not happen with the core's retransmission limit) no longer
/// holds back acquires.
const ACQUIRE_STALE: Duration = Duration::from_secs(300);

/// What the main loop does to the stages.
#[derive(Debug)]
pub enum SaChange {
    /// Install (or replace, on a rekey) these SAs, in this order: a
    /// CHILD_SA's inbound SA before its outbound one.
    Install {
        /// The peer.
        peer: String,
        /// The SAs.
        sas: Vec<SaParams>,
    },
    /// Remove these SAs (name and SPI) if they are still the ones
    /// installed under these names (a rekey replaced them otherwise); with
    /// no SPI, whatever SA has the name.
    Remove {
        /// The peer.
        peer: String,
        /// Names with the SPI of the SA to remove.
        sas: Vec<(String, Option<u32>)>,
    },
    /// Move the UDP encapsulation of the SAs of these names to `encap`
    /// (the peer behind a NAT came from a new port, RFC 7296 2.23), in
    /// place: keys and sequence numbers stay.
    Encapsulate {
        /// The peer.
        peer: String,
        /// The SAs' names.
        sas: Vec<String>,
        /// The new ports.
        encap: UdpEncap,
    },
}

/// A change and where the main loop says it is done on every gateway.
pub type AckedChange = (SaChange, SyncSender<()>);

/// How long the IKE thread waits for the main loop to apply a change.
const CHANGE_TIME: Duration = Duration::from_secs(3);

/// What `ctl` asks of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeCommand {
    /// Start an IKE SA now (and, for an initiating peer, again whenever
    /// it goes down).
    Initiate(String),
    /// Delete the peer's IKE SAs, their CHILD_SAs with them (RFC 7296
    /// 1.4.1); the peer is not initiated again until `Initiate`.
    Terminate(String),
    /// The mobility stage's news: a movement, a registration's outcome
    /// for the IKE SA (see `care_of.rs`).
    Mobility(MobilityChange),
}

/// Commands queued for the IKE thread: `ctl`'s, and the mobility
/// stage's news, which nobody waits for ([`IkeThread::tell`]).
const COMMANDS_DEPTH: usize = 16;

/// How long `ctl` waits for the IKE thread.
const COMMAND_TIME: Duration = Duration::from_secs(2);

/// The IKE thread: stopped and joined on drop.
pub struct IkeThread {
    stop: Arc<AtomicBool>,
    commands: SyncSender<(IkeCommand, std::sync::mpsc::Sender<Result<String, String>>)>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// SA changes for the main loop.
    pub changes: Receiver<AckedChange>,
    /// What `show ike` prints, refreshed by the thread.
    status: Arc<Mutex<Value>>,
    /// Whether a care-of peer has an IKE SA (a mobile node's Binding
    /// Updates may then carry K).
    pub care_of_ike_up: Arc<AtomicBool>,
}

impl IkeThread {
    /// Hands `c` to the IKE thread; its answer as the control socket's
    /// reply.
    pub fn command(&self, c: IkeCommand) -> Value {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.commands.try_send((c, tx)).is_err() {
            return json!({"error": "the IKE thread is busy; try again"});
        }
        match rx.recv_timeout(COMMAND_TIME) {
            Ok(Ok(done)) => json!({ "ok": done }),
            Ok(Err(e)) => json!({ "error": e }),
            Err(_) => json!({"error": "the IKE thread did not answer"}),
        }
    }

    /// Hands the mobility stage's news to the IKE thread without waiting
    /// for its answer (the thread logs what it did). The main loop calls
    /// this, and the IKE thread may itself be waiting for the main loop
    /// to apply an SA change (`Thread::change`): waiting here would hold
    /// both until [`COMMAND_TIME`], the main loop forwarding nothing
    /// meanwhile.
    pub fn tell(&self, m: MobilityChange) {
        let (reply, _) = std::sync::mpsc::channel();
        if self
            .commands
            .try_send((IkeCommand::Mobility(m), reply))
            .is_err()
        {
            warn!(change = ?m, "IKE: the IKE thread's command queue is full; a mobility change was dropped");
        }
    }

    /// The peers, their IKE SAs and CHILD_SAs, counters (`show ike`).
    pub fn status(&self) -> Value {
        self.status.lock().map_or_else(
            |_| json!({"error": "IKE status unavailable"}),
            |s| s.clone(),
        )
    }
}

impl Drop for IkeThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The traffic selectors of the SPD entries that protect with `sa`, ours
/// and the peer's (RFC 7296 2.9: IKE proposes them, the SPD stays the
/// authority on what the SA carries): their address ranges, protocol, and
/// ports, or ICMP type and code, or MH type ([`next_layer`]).
fn selectors(policy: &PolicySet, sa: &str) -> (Vec<TrafficSelector>, Vec<TrafficSelector>) {
    let ts = |a: AddrSel| -> Vec<TrafficSelector> {
        let range = |start: IpAddr, end: IpAddr| TrafficSelector {
            protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start,
            end,
        };
        match a {
            AddrSel::Any => vec![
                range(Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::BROADCAST.into()),
                range(
                    Ipv6Addr::UNSPECIFIED.into(),
                    Ipv6Addr::from(u128::MAX).into(),
                ),
            ],
            AddrSel::Range { family, lo, hi } => {
                let ip = |bits: u128| -> IpAddr {
                    match family {
                        Family::V4 => Ipv4Addr::from(bits as u32).into(),
                        Family::V6 => Ipv6Addr::from(bits).into(),
                    }
                };
                vec![range(ip(lo), ip(hi))]
            }
        }
    };
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for e in &policy.outbound {
        if matches!(&e.action, ActionConfig::Protect(n) if n.iter().any(|n| n == sa)) {
            let with = |ours| move |t| next_layer(&e.selector, t, ours);
            local.extend(ts(e.selector.local).into_iter().map(with(true)));
            remote.extend(ts(e.selector.remote).into_iter().map(with(false)));
        }
    }
    (local, remote)
}

/// `ts` with what an outbound SPD entry's selector `sel` adds beyond
/// addresses, on our side (`ours`) or the peer's: its protocol, and TCP,
/// UDP or SCTP ports of that side; on our side the ICMP type and code, or
/// the Mobility Header type, of what we send, in the port fields (RFC 4301
/// 4.4.1.1, RFC 7296 3.13.1); on the peer's every type of that protocol,
/// which the peer narrows to what its own SPD lets it send (RFC 7296 2.9:
/// so RFC 4877's Binding Update SA meets the home agent's Binding
/// Acknowledgement one).
fn next_layer(sel: &Selector, ts: TrafficSelector, ours: bool) -> TrafficSelector {
    let protocol = match sel.proto {
        ProtoSel::Any => 0,
        ProtoSel::Is(p) => p,
    };
    let byte = |v: u16| u8::try_from(v).unwrap_or(u8::MAX);
    let ports = |r: Range16| TrafficSelector {
        protocol,
        start_port: r.lo,
        end_port: r.hi,
        ..ts
    };
    match (protocol, ours) {
        (proto::TCP | proto::UDP | proto::SCTP, true) => ports(sel.local_ports),
        (proto::TCP | proto::UDP | proto::SCTP, false) => ports(sel.remote_ports),
        (proto::ICMP | proto::ICMPV6, true) => ts.with_icmp(
            protocol,
            (byte(sel.icmp_type.lo), byte(sel.icmp_type.hi)),
            (byte(sel.icmp_code.lo), byte(sel.icmp_code.hi)),
        ),
        (proto::MH, true) => ts.with_mh_types(byte(sel.mh_type.lo), byte(sel.mh_type.hi)),
        _ => ports(Range16::ANY16),
    }
}

/// The endpoint configuration of `peer`.
fn endpoint_config(peer: &PeerSettings, policy: &PolicySet) -> Result<EndpointConfig, String> {
    let bad = |e: String| format!("peer \"{}\": {e}", peer.name);
    let children = peer
        .children
        .iter()
        .map(|child| {
            let (local_ts, remote_ts) = selectors(policy, &child.outbound);
            let mode = match policy.ike_sa(&child.outbound).map(|s| s.mode) {
                Some(SaMode::Transport) => bitsgw_ike::Mode::Transport,
                _ => bitsgw_ike::Mode::Tunnel,
            };
            ChildConfig {
                name: child.name().to_string(),
                local_ts,
                remote_ts,
                mode,
            }
        })
        .collect();
    let cfg = EndpointConfig {
        peer: PeerConfig {
            name: peer.name.clone(),
            local_id: identity(&peer.local_id).map_err(bad)?,
            remote_id: identity(&peer.remote_id).map_err(bad)?,
            auth: match &peer.auth {
                PeerAuth::Psk(psk) => Authentication::Psk(Secret::new(psk.to_vec())),
                PeerAuth::Certificate(c) => Authentication::Certificate(c.clone()),
            },
            ike_proposals: peer
                .ike_proposals
                .iter()
                .map(|p| ike_proposal(p))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            esp_proposals: peer
                .esp_proposals
                .iter()
                .map(|p| esp_proposal(p))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            children,
            lifetimes: Lifetimes {
                ike: peer.ike_lifetime,
                child: peer.child_lifetime,
                jitter: peer.rekey_jitter,
            },
            liveness: peer.liveness,
            nat_keepalive: Some(peer.nat_keepalive),
            retransmit: Retransmit {
                tries: peer.retransmit_tries,
                ..Retransmit::default()
            },
            // RFC 7296 2.4: not when a care-of peer establishes its IKE SA
            // again while it still has the old one (make-before-break).
            initial_contact: peer.care_of.is_none(),
        },
        cookie_threshold: 64,
        max_half_open: 1024,
        half_open_timeout: Duration::from_secs(30),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Whether ESP in UDP of a tunnel SA in `mode` reaches the peer at `peer`,
/// the address IKE came from: behind a NAT only that address (the NAT's)
/// holds the mapping (RFC 3948), so the SA's tunnel endpoint must be it.
fn reaches_peer(mode: SaMode, peer: IpAddr) -> bool {
    match mode {
        SaMode::Tunnel { remote, .. } => remote == Addr::from(peer),
        SaMode::Transport => true,
    }
}

/// The stage's transform for a negotiated ESP suite.
fn transform(suite: &EspSuite) -> Option<TransformId> {
    Some(match (suite.encryption, suite.integrity) {
        (Encryption::AesGcm16 { key_bits: 128 }, None) => TransformId::AesGcm128,
        (Encryption::AesGcm16 { key_bits: 256 }, None) => TransformId::AesGcm256,
        (Encryption::AesCbc { key_bits: 128 }, Some(_)) => TransformId::AesCbc128HmacSha256,
        (Encryption::AesCbc { key_bits: 256 }, Some(_)) => TransformId::AesCbc256HmacSha256,
        _ => return None,
    })
}

/// The stage's keys of one direction: the encryption key followed by the
/// GCM salt (RFC 4106 8.1), and the integrity key.
fn stage_keys(k: &DirectionKeys) -> (zeroize::Zeroizing<Vec<u8>>, zeroize::Zeroizing<Vec<u8>>) {
    let mut enc = zeroize::Zeroizing::new(Vec::with_capacity(k.encryption.len() + k.salt.len()));
    enc.extend_from_slice(k.encryption.expose());
    enc.extend_from_slice(k.salt.expose());
    (enc, zeroize::Zeroizing::new(k.integrity.expose().to_vec()))
}

/// The IKE SA a CHILD_SA of the status belongs to ([`ike_sa_text`]).
const IKE_SA: &str = "ike_sa";

/// An IKE SA as the status names it: the SPI we chose.
fn ike_sa_text(id: IkeSaId) -> String {
    format!("{:016x}", id.0)
}

/// When an SA of the status was established, on the thread's clock (ns).
const SINCE: &str = "since_ns";

/// An SA of the status with its age and the time to its rekey (the core
/// rekeys when the lifetime ends, RFC 7296 2.8) instead of its start.
fn timed(v: &Value, now: u64, lifetime: Duration) -> Value {
    let mut v = v.clone();
    let since = v.as_object_mut().and_then(|o| o.remove(SINCE));
    let age =
        Duration::from_nanos(now.saturating_sub(since.and_then(|s| s.as_u64()).unwrap_or(now)));
    v["established_secs"] = json!(age.as_secs());
    v["rekey_in_secs"] = json!(lifetime.saturating_sub(age).as_secs());
    v
}

/// One peer's endpoint and what the thread remembers of it.
struct PeerRun {
    settings: PeerSettings,
    /// Its endpoint in [`Thread::endpoints`].
    endpoint: usize,
    /// When to initiate (again); none while an IKE SA is up or responding.
    initiate_at: Option<Instant>,
    /// IKE SAs up.
    ike_sas: BTreeMap<IkeSaId, Value>,
    /// CHILD_SAs installed, by inbound SPI.
    children: BTreeMap<u32, Value>,
    /// Why the last IKE SA went down.
    last_down: Option<String>,
    /// Terminated by `ctl`: not initiated again until `ctl initiate`.
    held: bool,
    /// A rekey's responder: the new outbound SAs, each installed when the
    /// peer deletes the CHILD_SA it replaces; one per child at most.
    pending_outbound: Vec<PendingOutbound>,
    /// The keyed SAs of the CHILD_SAs up, by inbound SPI: what is put
    /// back under the child's names when the CHILD_SA whose SAs hold them
    /// goes while another of the child stays (see [`Survivor`]).
    keyed: BTreeMap<u32, Keyed>,
    /// Per child, the CHILD_SAs (inbound SPIs) whose inbound and whose
    /// outbound SA are installed under its names.
    installed: BTreeMap<String, (Option<u32>, Option<u32>)>,
    /// CHILD_SAs established so far, to order [`Keyed::order`].
    established: u64,
    /// A trapping peer's acquires.
    acquire: Option<Acquire>,
    /// IKE SAs replaced by one established again from a new care-of
    /// address, deleted once its CHILD_SA is installed.
    retiring: Vec<IkeSaId>,
    /// The (local, remote) addresses the peer had before it followed a
    /// care-of address: its older IKE SAs still speak from there.
    former: Vec<(IpAddr, IpAddr)>,
    /// A home agent's `"remote": "any"` peer: its own addresses besides
    /// `settings.local` that its nodes' registrations said IKE comes to
    /// (the IPv4 one of an IPv4 care-of address, RFC 5555).
    also_local: Vec<IpAddr>,
}

impl PeerRun {
    /// The child IKE knows by `name`.
    fn child(&self, name: &str) -> Option<&ChildSettings> {
        self.settings.children.iter().find(|c| c.name() == name)
    }
}

/// A CHILD_SA's SAs as installed (keys zeroized when dropped).
struct Keyed {
    child: String,
    inbound: SaParams,
    outbound: SaParams,
    /// The larger, the later it was established.
    order: u64,
}

/// A rekey's responder's new outbound SA, not used yet.
struct PendingOutbound {
    /// The child's name.
    child: String,
    /// The inbound SPI of the CHILD_SA the rekey replaces.
    replaces: u32,
    /// The inbound SPI of the new CHILD_SA.
    inbound_spi: u32,
    /// The outbound SA to install.
    outbound: Box<SaParams>,
}

struct Thread {
    peers: Vec<PeerRun>,
    /// The IKE endpoints: one per peer, one per local address for the
    /// `"remote": "any"` peers.
    endpoints: Vec<Endpoint>,
    commands: Receiver<(IkeCommand, std::sync::mpsc::Sender<Result<String, String>>)>,
    policy: PolicySet,
    port: IkePort,
    changes: SyncSender<AckedChange>,
    status: Arc<Mutex<Value>>,
    start: Instant,
    /// Datagrams from no configured peer.
    no_peer: u64,
    /// Datagrams the channel to the endpoint had no room for.
    send_dropped: u64,
    /// SA changes the main loop's channel had no room for.
    changes_dropped: u64,
    /// See [`IkeThread::care_of_ike_up`].
    care_of_ike_up: Arc<AtomicBool>,
    /// `"danger_wireshark_keys_file"`, open (labs and debugging only).
    wireshark_keys: Option<wireshark_keys::WiresharkKeys>,
}

impl Thread {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut last_status = Instant::now() - Duration::from_secs(1);
        while !stop.load(Ordering::SeqCst) {
            let mut changed = false;
            while let Ok((c, reply)) = self.commands.try_recv() {
                let _ = reply.send(self.command(c));
                changed = true;
            }
            self.initiate_due();
            self.acquire_due();
            let now = self.now();
            let next = self
                .endpoints
                .iter()
                .filter_map(Endpoint::poll_timeout)
                .min();
            let wait = next
                .map_or(MAX_WAIT, |t| t.saturating_since(now))
                .clamp(Duration::from_millis(1), MAX_WAIT);
            match self.port.received.recv_timeout(wait) {
                Ok(d) => self.receive(d),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(d) = self.port.received.try_recv() {
                self.receive(d);
            }
            let now = self.now();
            for e in &mut self.endpoints {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
            changed |= self.flush();
            self.publish_care_of_ike();
            // Counters every half second; what `show ike` lists (SAs,
            // peers' states) as soon as it changed.
            if changed || last_status.elapsed() >= Duration::from_millis(500) {
                last_status = Instant::now();
                self.publish_status();
            }
        }
    }

    fn command(&mut self, c: IkeCommand) -> Result<String, String> {
        let now = self.now();
        let name = match &c {
            IkeCommand::Initiate(n) | IkeCommand::Terminate(n) => n.clone(),
            IkeCommand::Mobility(m) => return self.follow_mobility(*m),
        };
        let p = self
            .peers
            .iter_mut()
            .find(|p| p.settings.name == name)
            .ok_or_else(|| format!("no peer named \"{name}\""))?;
        match c {
            IkeCommand::Initiate(_) => {
                p.held = false;
                p.initiate_at = Some(Instant::now());
                info!(peer = %name, "IKE: initiate by control request");
                Ok(format!("initiating an IKE SA with peer \"{name}\""))
            }
            IkeCommand::Terminate(_) => {
                p.held = true;
                p.initiate_at = None;
                let ids: Vec<IkeSaId> = p.ike_sas.keys().copied().collect();
                for id in &ids {
                    self.endpoints[p.endpoint]
                        .delete_ike(now, *id)
                        .map_err(|e| e.to_string())?;
                }
                info!(peer = %name, ike_sas = ids.len(), "IKE: terminate by control request");
                Ok(format!(
                    "deleting {} IKE SA(s) of peer \"{name}\" with their CHILD_SAs",
                    ids.len()
                ))
            }
            IkeCommand::Mobility(m) => self.follow_mobility(m),
        }
    }

    fn initiate_due(&mut self) {
        let now = self.now();
        for p in &mut self.peers {
            let Some(remote) = p.settings.remote else {
                continue;
            };
            if p.initiate_at.is_some_and(|t| t <= Instant::now()) {
                p.initiate_at = None;
                // A care-of peer at home: nothing to run from.
                if p.settings.local.is_unspecified() {
                    continue;
                }
                let local = SocketAddr::new(p.settings.local, IKE_PORT);
                let remote = SocketAddr::new(remote, IKE_PORT);
                if let Err(e) = self.endpoints[p.endpoint].initiate(now, local, remote) {
                    warn!(peer = %p.settings.name, error = %e, "IKE: could not initiate");
                    p.initiate_at = Some(Instant::now() + REINITIATE_AFTER);
                } else {
                    info!(peer = %p.settings.name, %remote, "IKE: initiating");
                }
            }
        }
    }

    /// Hands a datagram to the endpoint of the peer whose addresses are
    /// its addresses, else to that of the `"remote": "any"` peers of its
    /// local address.
    fn receive(&mut self, d: IkeDatagram) {
        let now = self.now();
        let on = |remote: Option<IpAddr>| {
            let peer = |p: &&PeerRun| p.takes(d.local.ip(), remote);
            self.peers.iter().find(peer).map(|p| p.endpoint)
        };
        match on(Some(d.remote.ip())).or_else(|| on(None)) {
            Some(e) => {
                let endpoint = &mut self.endpoints[e];
                // Certificates are checked against the wall clock.
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                endpoint.set_wall_clock(wall.unwrap_or_default());
                endpoint.handle_datagram(now, d.remote, d.local, &d.data)
            }
            None => self.no_peer += 1,
        }
    }

    /// The peer of endpoint `e` an event concerns: the one it names, else
    /// the one with its IKE SA, else the endpoint's only peer.
    fn peer_of(&self, e: usize, event: &Event) -> Option<usize> {
        let named = match event {
            Event::IkeSaUp { peer, .. } => Some(peer),
            Event::ChildSaEstablished(c) => Some(&c.name),
            Event::ChildSaFailed { name, .. } | Event::ChildSaDeleted { name, .. } => Some(name),
            _ => None,
        };
        let ike = match event {
            Event::IkeSaRekeyed { old: ike, .. }
            | Event::IkeSaMoved { ike, .. }
            | Event::IkeSaDown { ike, .. } => Some(*ike),
            _ => None,
        };
        let mut of_endpoint = (0..self.peers.len()).filter(|&i| self.peers[i].endpoint == e);
        of_endpoint
            .clone()
            .find(|&i| named.is_some_and(|n| *n == self.peers[i].settings.name))
            .or_else(|| {
                of_endpoint
                    .clone()
                    .find(|&i| ike.is_some_and(|ike| self.peers[i].ike_sas.contains_key(&ike)))
            })
            .or_else(|| {
                let only = of_endpoint.next();
                of_endpoint.next().is_none().then_some(only).flatten()
            })
    }

    /// Acts on what the endpoints report, then sends what they want sent:
    /// an SA a message implies is installed before the message leaves
    /// (the IKE_AUTH or CREATE_CHILD_SA response; the Delete of the
    /// CHILD_SA a rekey replaced), so the peer never uses an SA we do not
    /// have yet.
    /// Handles the endpoints' events and sends their datagrams; returns
    /// whether there was an event (the status shown is then out of date).
    fn flush(&mut self) -> bool {
        let mut changed = false;
        for e in 0..self.endpoints.len() {
            while let Some(ev) = self.endpoints[e].poll_event() {
                match self.peer_of(e, &ev) {
                    Some(i) => self.event(i, ev),
                    None => warn!("IKE: an event of no configured peer; ignored"),
                }
                changed = true;
            }
            while let Some(t) = self.endpoints[e].poll_transmit() {
                let d = IkeDatagram {
                    local: t.local,
                    remote: t.remote,
                    data: t.contents,
                };
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    self.port.send.try_send(d)
                {
                    self.send_dropped += 1;
                }
            }
        }
        changed
    }

    /// Hands `c` to the main loop and waits until every gateway has it.
    fn change(&mut self, c: SaChange) {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.changes.try_send((c, ack)).is_err() {
            self.changes_dropped += 1;
            warn!("IKE: the main loop's queue is full; an SA change was dropped");
            return;
        }
        if done.recv_timeout(CHANGE_TIME).is_err() {
            warn!("IKE: the workers did not confirm an SA change in time");
        }
    }

    fn event(&mut self, i: usize, e: Event) {
        let name = self.peers[i].settings.name.clone();
        match e {
            Event::IkeSaUp {
                ike,
                initiator,
                spi_i,
                spi_r,
                suite,
                nat_local,
                nat_remote,
                remote_id,
                local,
                remote,
                ..
            } => {
                info!(peer = %name, %remote, remote_id = ?remote_id, spi_i = %format!("{spi_i:016x}"), spi_r = %format!("{spi_r:016x}"), initiator, "IKE SA up");
                let since = self.now().0;
                self.peers[i].ike_sas.insert(
                    ike,
                    json!({
                        "spi_i": format!("{spi_i:016x}"),
                        "spi_r": format!("{spi_r:016x}"),
                        "initiator": initiator,
                        "encryption": format!("{:?}", suite.encryption),
                        "integrity": suite.integrity.map(|x| format!("{x:?}")),
                        "prf": format!("{:?}", suite.prf),
                        "group": suite.group.number(),
                        "nat_local": nat_local,
                        "nat_remote": nat_remote,
                        // The addresses it came up with (a care-of peer's
                        // follow its movements).
                        "local": local.to_string(),
                        "remote": remote.to_string(),
                        SINCE: since,
                    }),
                );
            }
            Event::IkeSaRekeyed {
                old,
                new,
                spi_i,
                spi_r,
            } => {
                info!(peer = %name, spi_i = %format!("{spi_i:016x}"), spi_r = %format!("{spi_r:016x}"), "IKE SA rekeyed");
                let since = self.now().0;
                let p = &mut self.peers[i];
                let mut v = p.ike_sas.remove(&old).unwrap_or_else(|| json!({}));
                v["spi_i"] = json!(format!("{spi_i:016x}"));
                v["spi_r"] = json!(format!("{spi_r:016x}"));
                v[SINCE] = json!(since);
                p.ike_sas.insert(new, v);
            }
            Event::IkeSaDown { ike, reason } => {
                let p = &mut self.peers[i];
                p.ike_sas.remove(&ike);
                let why = match reason {
                    DownReason::PeerNotify(n) => format!("peer sent {n:?}"),
                    r => format!("{r:?}"),
                };
                warn!(peer = %name, reason = %why, "IKE SA down");
                p.last_down = Some(why);
                // Fail closed: with no IKE SA left no CHILD_SA of the peer
                // is valid, whatever was (or was not) reported deleted.
                if p.ike_sas.is_empty() {
                    p.children.clear();
                    p.pending_outbound.clear();
                    p.keyed.clear();
                    p.installed.clear();
                    let sas = p
                        .settings
                        .children
                        .iter()
                        .flat_map(|c| [(c.outbound.clone(), None), (c.inbound.clone(), None)])
                        .collect();
                    self.change(SaChange::Remove {
                        peer: name.clone(),
                        sas,
                    });
                }
                let p = &mut self.peers[i];
                if let Some(a) = p.acquire.as_mut() {
                    a.ended(ike, None, false);
                }
                if p.settings.start == StartAction::Initiate && p.ike_sas.is_empty() && !p.held {
                    p.initiate_at = Some(Instant::now() + REINITIATE_AFTER);
                }
            }
            Event::ChildSaEstablished(c) => {
                self.child_up(i, &c);
                self.retire_replaced(i, &c);
                if let Some(a) = self.peers[i].acquire.as_mut() {
                    a.ended(c.ike, Some(&c.child), true);
                }
            }
            Event::IkeSaMoved { ike, local, remote } => {
                if let Some(v) = self.peers[i].ike_sas.get_mut(&ike) {
                    v["remote"] = json!(remote.to_string());
                }
                self.moved(i, local, remote)
            }
            Event::ChildSaFailed {
                ike, child, notify, ..
            } => {
                let remote_id = &self.peers[i].settings.remote_id;
                warn!(peer = %name, %remote_id, child = %child, notify = ?notify, "CHILD_SA not created");
                if let Some(a) = self.peers[i].acquire.as_mut() {
                    a.ended(ike, Some(&child), false);
                }
            }
            Event::ChildSaDeleted {
                child: child_name,
                inbound_spi,
                outbound_spi,
                ..
            } => {
                self.peers[i].children.remove(&inbound_spi);
                let Some(child) = self.peers[i].child(&child_name).cloned() else {
                    warn!(peer = %name, child = %child_name, "CHILD_SA of no configured child deleted");
                    return;
                };
                info!(peer = %name, child = %child_name, inbound_spi = %format!("{inbound_spi:08x}"), outbound_spi = %format!("{outbound_spi:08x}"), "CHILD_SA deleted");
                // The rekey's initiator deleted the CHILD_SA it replaced,
                // having installed the new one: ours moves to it now.
                let p = &mut self.peers[i];
                let at = p.pending_outbound.iter().position(|o| {
                    o.child == child_name
                        && (o.replaces == inbound_spi || o.inbound_spi == inbound_spi)
                });
                match at.map(|at| p.pending_outbound.remove(at)) {
                    Some(pending) if pending.replaces == inbound_spi => {
                        info!(peer = %name, child = %child_name, outbound_spi = %format!("{:08x}", pending.outbound.spi), "rekeyed CHILD_SA: outbound moves to the new SA");
                        p.installed.entry(child_name.clone()).or_default().1 =
                            Some(pending.inbound_spi);
                        self.change(SaChange::Install {
                            peer: name.clone(),
                            sas: vec![*pending.outbound],
                        });
                    }
                    // The new CHILD_SA went first: its outbound SA is
                    // never used.
                    _ => {}
                }
                self.put_back_survivor(i, &child_name, inbound_spi);
                self.change(SaChange::Remove {
                    peer: name,
                    sas: vec![
                        (child.outbound, Some(outbound_spi)),
                        (child.inbound, Some(inbound_spi)),
                    ],
                });
            }
            _ => {}
        }
    }
}

/// The acquire signals of the trapping peers' outbound SAs, by SA name:
/// the stages raise them (see [`bitsgw_ipsec::IpsecStage::set_acquire`]),
/// the IKE thread takes them.
pub fn acquire_signals(cfg: &ApplianceConfig) -> BTreeMap<String, Arc<AcquireSignal>> {
    cfg.peers
        .iter()
        .filter(|p| p.start == StartAction::Trap)
        .flat_map(|p| &p.children)
        .map(|c| (c.outbound.clone(), Arc::default()))
        .collect()
}

/// Starts the IKE thread for the configuration's peers, on `port` (the
/// network endpoint's IKE channels), taking the stages' `acquires` (from
/// [`acquire_signals`]); none without peers.
pub fn start(
    cfg: &ApplianceConfig,
    port: IkePort,
    acquires: &BTreeMap<String, Arc<AcquireSignal>>,
) -> Result<IkeThread, String> {
    let mut peers = Vec::with_capacity(cfg.peers.len());
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for p in &cfg.peers {
        let config = endpoint_config(p, &cfg.policy)?;
        // The `"remote": "any"` peers of a local address share its endpoint.
        let shared = peers
            .iter()
            .find(|o: &&PeerRun| {
                p.remote.is_none() && o.settings.remote.is_none() && o.settings.local == p.local
            })
            .map(|o| o.endpoint);
        let endpoint = match shared {
            Some(e) => {
                endpoints[e]
                    .add_peer(config.peer)
                    .map_err(|e| e.to_string())?;
                e
            }
            None => {
                endpoints.push(Endpoint::new(config).map_err(|e| e.to_string())?);
                endpoints.len() - 1
            }
        };
        peers.push(PeerRun {
            settings: p.clone(),
            endpoint,
            initiate_at: (p.start == StartAction::Initiate).then(Instant::now),
            ike_sas: BTreeMap::new(),
            children: BTreeMap::new(),
            last_down: None,
            held: false,
            pending_outbound: Vec::new(),
            keyed: BTreeMap::new(),
            installed: BTreeMap::new(),
            established: 0,
            retiring: Vec::new(),
            former: Vec::new(),
            also_local: Vec::new(),
            acquire: Acquire::of_children(&p.children, acquires),
        });
    }
    let (changes_tx, changes) = std::sync::mpsc::sync_channel(CHANGES_DEPTH);
    let (commands_tx, commands) = std::sync::mpsc::sync_channel(COMMANDS_DEPTH);
    let status = Arc::new(Mutex::new(json!({"peers": []})));
    let stop = Arc::new(AtomicBool::new(false));
    let care_of_ike_up = Arc::new(AtomicBool::new(false));
    let mut thread = Thread {
        peers,
        endpoints,
        commands,
        policy: cfg.policy.clone(),
        port,
        changes: changes_tx,
        status: Arc::clone(&status),
        start: Instant::now(),
        no_peer: 0,
        send_dropped: 0,
        changes_dropped: 0,
        care_of_ike_up: Arc::clone(&care_of_ike_up),
        wireshark_keys: cfg
            .wireshark_keys_file
            .as_deref()
            .map(wireshark_keys::WiresharkKeys::open)
            .transpose()?,
    };
    let stop_t = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("ike".into())
        .spawn(move || thread.run(&stop_t))
        .map_err(|e| e.to_string())?;
    Ok(IkeThread {
        stop,
        commands: commands_tx,
        handle: Some(handle),
        changes,
        status,
        care_of_ike_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_acquires_back_off_doubling_up_to_the_limit_and_success_resets() {
        let mut a = Acquire::new(vec![("c".into(), Arc::default())]);
        let (ours, other) = (IkeSaId(1), IkeSaId(2));
        let mut waits = Vec::new();
        for _ in 0..8 {
            a.negotiating = Some((Instant::now(), ours, "c".into()));
            // Another IKE SA's end is not this negotiation's, nor is
            // another child's on this one.
            a.ended(other, None, false);
            a.ended(ours, Some("d"), true);
            assert!(a.negotiating.is_some());
            let before = Instant::now();
            a.ended(ours, Some("c"), false);
            assert!(a.negotiating.is_none());
            waits.push(a.not_before.unwrap().duration_since(before).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(a.failed, 8);
        a.negotiating = Some((Instant::now(), ours, "c".into()));
        a.ended(ours, None, true);
        assert_eq!((a.not_before, a.backoff), (None, ACQUIRE_BACKOFF));
        // Without a negotiation under way, nothing changes.
        a.ended(ours, Some("c"), false);
        assert_eq!((a.failed, a.not_before), (8, None));
    }

    /// A mobile node's policy (RFC 4877): Binding Updates out and
    /// Acknowledgements in on a transport-mode pair, payload (HTTPS to one
    /// network, Mobile Prefix Solicitations, anything else of the home
    /// address) on a tunnel-mode pair; both pairs keyed by one peer.
    const MOBILE_POLICY: &str = r#"{"addresses": {"hoa": "2001:db8:1::100", "ha": "2001:db8:1::1"},
      "spd": {
        "outbound": [
          {"name": "bu-out", "local": "hoa", "remote": "ha", "proto": "mh", "mh_type": "bu", "action": "protect", "sa": "bu"},
          {"name": "web-out", "local": "hoa", "remote": "2001:db8:2::/48", "proto": "tcp", "remote_port": 443, "action": "protect", "sa": "pay-out"},
          {"name": "mps-out", "local": "hoa", "remote": "ha", "proto": "icmpv6", "icmp_type": 146, "action": "protect", "sa": "pay-out"},
          {"name": "payload-out", "local": "hoa", "action": "protect", "sa": "pay-out"}],
        "inbound": [
          {"name": "ba-in", "local": "hoa", "remote": "ha", "proto": "mh", "mh_type": "ba", "action": "protect", "sa": "ba"},
          {"name": "payload-in", "local": "hoa", "action": "protect", "sa": "pay-in"}]},
      "sad": [
        {"name": "bu", "direction": "outbound", "keyed_by": "ike", "mode": "transport"},
        {"name": "ba", "direction": "inbound", "keyed_by": "ike", "mode": "transport"},
        {"name": "pay-out", "direction": "outbound", "keyed_by": "ike", "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}},
        {"name": "pay-in", "direction": "inbound", "keyed_by": "ike", "tunnel": {"local": "203.0.113.2", "remote": "203.0.113.1"}}]}"#;

    #[test]
    fn each_child_proposes_its_spd_entries_protocol_ports_and_types_in_its_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("bitsgw-ike-children-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.json"), MOBILE_POLICY).unwrap();
        let psk = dir.join("k.psk");
        std::fs::write(&psk, "a sixteen-octet or longer key\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = r#"{"role": "gateway", "policy": "p.json",
            "ports": {"host": {"type": "af_packet", "interface": "h"}, "network": {"type": "af_packet", "interface": "n"}},
            "addresses": {"network": ["203.0.113.1/24"]},
            "peers": [{"name": "ha", "local": "203.0.113.1", "remote": "203.0.113.2",
              "local_id": "fqdn:mn.example", "remote_id": "fqdn:ha.example", "psk_file": "k.psk",
              "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
              "start": "initiate",
              "children": [{"outbound": "bu", "inbound": "ba"}, {"outbound": "pay-out", "inbound": "pay-in"}]}]}"#;
        let cfg = crate::config::parse(text, &dir.join("c.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let ep = endpoint_config(&cfg.peers[0], &cfg.policy).unwrap();
        let children = &ep.peer.children;
        assert_eq!(children.len(), 2);
        let host = |a: &str| TrafficSelector::prefix(a.parse().unwrap(), 128);
        let (hoa, ha) = (host("2001:db8:1::100"), host("2001:db8:1::1"));
        let bu = &children[0];
        assert_eq!(
            (bu.name.as_str(), bu.mode),
            ("bu", bitsgw_ike::Mode::Transport)
        );
        // Our MH type in the high octet of our ports; the home agent's
        // narrows the other side.
        assert_eq!(bu.local_ts, vec![hoa.with_mh_types(5, 5)]);
        assert_eq!(
            bu.remote_ts,
            vec![TrafficSelector {
                protocol: 135,
                ..ha
            }]
        );
        let pay = &children[1];
        assert_eq!(
            (pay.name.as_str(), pay.mode),
            ("pay-out", bitsgw_ike::Mode::Tunnel)
        );
        let web = TrafficSelector {
            protocol: 6,
            start_port: 443,
            end_port: 443,
            ..TrafficSelector::prefix("2001:db8:2::".parse().unwrap(), 48)
        };
        let any_v4 = TrafficSelector::prefix(Ipv4Addr::UNSPECIFIED.into(), 0);
        let any_v6 = TrafficSelector::prefix(Ipv6Addr::UNSPECIFIED.into(), 0);
        assert_eq!(
            pay.local_ts,
            vec![
                TrafficSelector { protocol: 6, ..hoa },
                hoa.with_icmp(58, (146, 146), (0, 255)),
                hoa
            ]
        );
        assert_eq!(
            pay.remote_ts,
            vec![web, TrafficSelector { protocol: 58, ..ha }, any_v4, any_v6]
        );
    }

    #[test]
    fn encapsulated_esp_goes_to_the_tunnel_endpoint_ike_came_from() {
        let nat: IpAddr = "203.0.113.129".parse().unwrap();
        let tunnel = |remote: &str| SaMode::Tunnel {
            local: Addr::from("203.0.113.130".parse::<IpAddr>().unwrap()),
            remote: Addr::from(remote.parse::<IpAddr>().unwrap()),
        };
        assert!(reaches_peer(tunnel("203.0.113.129"), nat));
        // The peer's own address behind the NAT holds no mapping.
        assert!(!reaches_peer(tunnel("203.0.113.1"), nat));
        assert!(reaches_peer(SaMode::Transport, nat));
    }

    #[test]
    fn gcm_keys_carry_the_salt_after_the_key() {
        let k = DirectionKeys {
            encryption: Secret::new(vec![1; 16]),
            salt: Secret::new(vec![2; 4]),
            integrity: Secret::new(Vec::new()),
        };
        let (enc, auth) = stage_keys(&k);
        assert_eq!(&enc[..16], &[1; 16]);
        assert_eq!(&enc[16..], &[2; 4]);
        assert!(auth.is_empty());
        let gcm = EspSuite {
            encryption: Encryption::AES128_GCM16,
            integrity: None,
            group: None,
        };
        let t = transform(&gcm).unwrap();
        assert_eq!(t, TransformId::AesGcm128);
        assert_eq!(t.enc_key_len(), enc.len());
        let cbc = EspSuite {
            encryption: Encryption::AES256_CBC,
            integrity: Some(bitsgw_ike::suite::Integrity::HmacSha256_128),
            group: None,
        };
        let t = transform(&cbc).unwrap();
        assert_eq!(t, TransformId::AesCbc256HmacSha256);
        assert_eq!(t.auth_key_len(), 32);
        assert_eq!(t.enc_key_len(), 32);
    }
}
