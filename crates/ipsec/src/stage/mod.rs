//! The IPsec stage: RFC 4301 outbound (5.1) and inbound (5.2) processing
//! with the ESP engine (RFC 4303) and ESP-in-UDP (RFC 3948).
//!
//! Sans-IO in quinn-proto's shape: `handle_outbound` / `handle_inbound` take
//! a packet buffer and `now` and say what to do with it ([`Disposition`]);
//! `handle_timeout` drives lifetimes and reassembly timers; `poll_event`
//! and `poll_transmit` hand out what the stage produced on its own.
//!
//! A packet is processed in place in its [`PacketBuf`]: headers are
//! prepended into the headroom, the trailer appended into the tailroom and
//! the crypto runs over the buffer itself. Nothing is allocated per packet
//! in steady state (fragments and events are the exceptions, and they come
//! from pools or are rare by nature).

mod acquire;
mod burst;
mod encap;
mod fast;
mod fast_in;
mod inbound;
mod outbound;

pub use acquire::AcquireSignal;

use crate::counters::{DropReason, StageCounters};
use crate::flow::{addresses, flow_key};
use crate::ownership::{Anchors, OwnerMap, StageOwnership};
use crate::sa::{Direction, LimitKind, Mode, Sa, SaParams, SaState, UdpEncap};
use crate::sad::{NameId, SaId, Sad, SadError};
use crate::selector::{proto, Addr, Family};
use crate::spd::{Action, Spd, SpdEntry, SpdEntryId};
use crate::walked::{ParseCounts, Walked};
use bitsgw_frag::{self as frag, FragDrop, Reassembler, Reassembly, ReassemblyLimits};
use bitsgw_wire::esp::{
    emit_esp_header, emit_udp_header, locate_esp, udp_checksum, EspAt, EspHeader, ESP_HEADER_LEN,
    NAT_T_PORT, UDP_HEADER_LEN,
};
use bitsgw_wire::ip::{self, IpMeta, IpVersion};
use bitsgw_wire::{PacketBuf, Timestamp};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Most SAs in one bundle, and most ESP layers unwrapped inbound.
pub const MAX_BUNDLE: usize = 4;

/// What to do with the packet after the stage has handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Disposition {
    /// Outbound: the buffer holds the packet to send to the network.
    Forward,
    /// Inbound: the buffer holds the packet to deliver to the host side.
    Deliver,
    /// Dropped, and counted under this reason.
    Drop(DropReason),
    /// An inbound fragment, held for reassembly.
    Held,
    /// Inbound: an IKE message on an ESP-in-UDP port (non-ESP marker,
    /// RFC 3948 2.2); the buffer holds the packet for the IKE handler.
    ToIke,
    /// Outbound packet too big to send: the buffer now holds an ICMP error
    /// for the sender, to send back toward the host side (RFC 4301 8).
    IcmpError,
    /// Outbound: the protected packet was fragmented; `poll_transmit`
    /// yields this many fragments for the network.
    Fragmented(usize),
}

/// Something the control plane should know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A soft lifetime was reached: the SA works on, replace it soon.
    SoftExpired {
        /// The SA (its slot; a hard-expired SA's slot is free again).
        sa: SaId,
        /// SA name.
        name: String,
        /// SPI.
        spi: u32,
        /// Direction.
        direction: Direction,
        /// Which limit.
        limit: LimitKind,
    },
    /// A hard lifetime was reached: the SA was removed; traffic it
    /// protected is now discarded.
    HardExpired {
        /// The SA (its slot; a hard-expired SA's slot is free again).
        sa: SaId,
        /// SA name.
        name: String,
        /// SPI.
        spi: u32,
        /// Direction.
        direction: Direction,
        /// Which limit.
        limit: LimitKind,
    },
    /// The outbound sequence counter is exhausted: the SA was stopped
    /// (RFC 4303 3.3.3) and must be replaced.
    SeqOverflow {
        /// The SA.
        sa: SaId,
        /// SA name.
        name: String,
        /// SPI.
        spi: u32,
    },
}

/// Settings of the stage as a whole.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// MTU of the network side: outer packets larger than this are
    /// fragmented or refused with an ICMP error.
    pub mtu: usize,
    /// UDP ports on which inbound ESP-in-UDP is recognised (RFC 3948; 4500
    /// and any configured port).
    pub udp_encap_ports: Vec<u16>,
    /// Reassembly limits.
    pub reassembly: ReassemblyLimits,
    /// Source of ICMPv4 errors this stage sends; when unset, the tunnel's
    /// local endpoint or else the original destination is used.
    pub icmp_source_v4: Option<[u8; 4]>,
    /// Source of ICMPv6 errors this stage sends (as above).
    pub icmp_source_v6: Option<[u8; 16]>,
    /// TTL / hop limit of outer headers (RFC 4301 5.1.2).
    pub outer_ttl: u8,
    /// Whether outbound SAs send only sequence numbers leased to them
    /// ([`IpsecStage::grant_lease`]). The appliance's `run` turns this on
    /// and keeps the leases in a state file, so that no (key, sequence
    /// number) pair, the nonce of GCM, GMAC and ChaCha20-Poly1305 and the
    /// input of the CBC IV, is used twice across restarts. Off for stages
    /// that never reach a network (replay, benchmarks, tests).
    pub sequence_leases: bool,
    /// The AES-GCM backend of SAs configured `auto`, per key size.
    pub gcm: crate::gcm_choice::GcmPreference,
}

/// An outbound SA that needs (more) sequence numbers leased to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The SA.
    pub sa: SaId,
    /// Its name (for messages).
    pub name: String,
    /// Its SPI.
    pub spi: u32,
    /// The identity of its key stream ([`crate::sa::SaParams::lease_identity`]).
    pub identity: [u8; 32],
    /// The last sequence number it sent (0: none yet).
    pub last_sent: u64,
    /// The ceiling of its current lease (0: none yet).
    pub ceiling: u64,
}

impl Default for StageConfig {
    fn default() -> Self {
        StageConfig {
            mtu: 1500,
            udp_encap_ports: vec![NAT_T_PORT],
            reassembly: ReassemblyLimits::default(),
            icmp_source_v4: None,
            icmp_source_v6: None,
            outer_ttl: 64,
            sequence_leases: false,
            gcm: Default::default(),
        }
    }
}

/// Numbers the stages of this process, so that the query generation of a
/// stage that replaced another never equals one the old stage gave out:
/// a cache keyed on the generation (the receive threads' flow owners, the
/// tunnel stage's classification) can not take one stage's answers for
/// another's.
static NEXT_STAGE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Bits of the query generation that count changes within one stage; the
/// stage's number is above them.
const GENERATION_CHANGE_BITS: u32 = 40;

/// The IPsec stage.
#[derive(Debug)]
pub struct IpsecStage {
    pub(crate) cfg: StageConfig,
    pub(crate) spd_out: Spd,
    pub(crate) spd_in: Spd,
    pub(crate) sad: Sad,
    /// SPD entries that name each SA, so an SA learns its selectors when it
    /// is installed (RFC 4301 4.4.2).
    refs_by_name: FxHashMap<NameId, Vec<SpdEntryId>>,
    spd_generation: u64,
    /// This stage's number (see [`NEXT_STAGE_ID`]).
    id: u64,
    counters: StageCounters,
    events: VecDeque<Event>,
    deadlines: BinaryHeap<Reverse<(Timestamp, SaId)>>,
    reassembler: Reassembler,
    scratch: PacketBuf,
    tx_queue: VecDeque<PacketBuf>,
    spare: Vec<PacketBuf>,
    ident_v4: u16,
    ident_v6: u32,
    /// Whether some outbound SA has asked for a lease since the last
    /// [`IpsecStage::take_lease_requests`].
    leases_wanted: bool,
    /// Which SAs this stage owns (see [`crate::ownership`]).
    ownership: StageOwnership,
    /// What each SA name's ownership follows (its bundle's first SA).
    anchors: Anchors,
    /// Walks and classifications this stage made itself.
    parse_counts: ParseCounts,
    /// SA names negotiated on demand (see [`acquire`]).
    acquires: FxHashMap<NameId, std::sync::Arc<AcquireSignal>>,
    /// Per outbound SPD entry, its resolved protection (see [`fast`]).
    fast_out: Vec<fast::FastOut>,
    /// Whether packets may take the fast paths, outbound and inbound
    /// (tests compare them with the general path).
    fast_path: bool,
    /// Packets the fast path protected.
    #[cfg(test)]
    fast_hits: u64,
    /// Packets the inbound fast path opened.
    #[cfg(test)]
    fast_in_hits: u64,
}

impl From<FragDrop> for DropReason {
    fn from(f: FragDrop) -> Self {
        match f {
            FragDrop::Overlap => DropReason::FragOverlap,
            FragDrop::TooLarge => DropReason::FragTooLarge,
            FragDrop::MemoryLimit => DropReason::FragMemory,
            FragDrop::TooManyDatagrams => DropReason::FragTooMany,
            FragDrop::TimedOut => DropReason::FragTimeout,
            FragDrop::BufferTooSmall => DropReason::NoBufferRoom,
            _ => DropReason::FragMalformed,
        }
    }
}

impl IpsecStage {
    /// An empty stage: no policies (so everything is discarded) and no SAs.
    pub fn new(cfg: StageConfig) -> Self {
        let reassembler = Reassembler::new(cfg.reassembly);
        IpsecStage {
            cfg,
            spd_out: Spd::default(),
            spd_in: Spd::default(),
            sad: Sad::new(),
            refs_by_name: FxHashMap::default(),
            spd_generation: 0,
            id: NEXT_STAGE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            counters: StageCounters::default(),
            events: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            reassembler,
            scratch: PacketBuf::new(),
            tx_queue: VecDeque::new(),
            spare: Vec::new(),
            ident_v4: 1,
            ident_v6: 1,
            leases_wanted: false,
            ownership: StageOwnership::All,
            anchors: Anchors::default(),
            parse_counts: ParseCounts::default(),
            acquires: FxHashMap::default(),
            fast_out: Vec::new(),
            fast_path: true,
            #[cfg(test)]
            fast_hits: 0,
            #[cfg(test)]
            fast_in_hits: 0,
        }
    }

    /// How often this stage walked a received packet and classified a
    /// flow itself (not counting what [`Walked`] handed it).
    pub fn parse_counts(&self) -> ParseCounts {
        self.parse_counts
    }

    /// The walk to use for the packet in `buf`: the one handed over if it
    /// fits the buffer, else a walk of its own (counted); `None` if the
    /// packet is not IP.
    #[inline(always)]
    fn walk(&mut self, buf: &PacketBuf, walked: Option<&Walked>) -> Option<IpMeta> {
        match walked {
            Some(w) if w.meta.total_len <= buf.len() => Some(w.meta),
            _ => {
                self.parse_counts.ip_walks += 1;
                ip::parse(buf.data()).ok()
            }
        }
    }

    /// Makes this stage one of several that share the SAs (see
    /// [`crate::ownership`]): it keeps the keys and sequence state only of
    /// the SAs `ownership` gives it, now and for every SA installed later.
    /// Set once, before the stage handles a packet; keys dropped here are
    /// gone (an SA whose keys this stage no longer has stays unowned).
    pub fn set_ownership(&mut self, ownership: StageOwnership) {
        self.ownership = ownership;
        let owned: Vec<(SaId, bool)> = self
            .sad
            .iter()
            .map(|(id, sa)| (id, self.owns(sa)))
            .collect();
        for (id, owns) in owned {
            if !owns {
                if let Some(sa) = self.sad.get_mut(id) {
                    sa.keyed = None;
                }
            }
        }
    }

    /// Which SAs this stage owns.
    pub fn ownership(&self) -> StageOwnership {
        self.ownership
    }

    /// Whether this stage's ownership gives it `sa`.
    fn owns(&self, sa: &Sa) -> bool {
        sa.name_id
            .is_some_and(|n| self.ownership.owns(self.anchors.of(n), sa.params.direction))
    }

    /// The owner of the SAs that SA name `name` refers to in `direction`.
    fn owner_of(&self, name: NameId, direction: Direction) -> usize {
        self.ownership.owner(self.anchors.of(name), direction)
    }

    /// Who owns what, for a dispatcher (see [`OwnerMap`]).
    pub fn owner_map(&self) -> OwnerMap {
        let entry_owner = self
            .spd_out
            .entries()
            .iter()
            .map(|e| match &e.action {
                Action::Protect(names) => names
                    .first()
                    .map(|n| self.owner_of(*n, Direction::Outbound)),
                _ => None,
            })
            .collect();
        let spi_owner = self
            .sad
            .iter()
            .filter(|(_, sa)| sa.params.direction == Direction::Inbound)
            .filter_map(|(_, sa)| {
                let owner = self.owner_of(sa.name_id?, Direction::Inbound);
                Some((sa.params.spi, owner))
            })
            .collect();
        OwnerMap::new(
            self.generation(),
            self.spd_out.clone(),
            entry_owner,
            spi_owner,
            self.cfg.udp_encap_ports.clone(),
        )
    }

    /// The stage's settings.
    pub fn config(&self) -> &StageConfig {
        &self.cfg
    }

    /// Stage counters.
    pub fn counters(&self) -> &StageCounters {
        &self.counters
    }

    /// The SPD of one direction.
    pub fn spd(&self, direction: Direction) -> &Spd {
        match direction {
            Direction::Outbound => &self.spd_out,
            Direction::Inbound => &self.spd_in,
        }
    }

    /// The SAD.
    pub fn sad(&self) -> &Sad {
        &self.sad
    }

    /// The read-only query API (see [`crate::query`]).
    pub fn query(&self) -> crate::query::Query<'_> {
        crate::query::Query::new(self)
    }

    pub(crate) fn generation(&self) -> u64 {
        let changes = self.sad.generation() + self.spd_generation;
        (self.id << GENERATION_CHANGE_BITS).wrapping_add(changes)
    }

    /// Resolves an SA name for SPD entries (creating the name's slot).
    pub fn sa_name(&mut self, name: &str) -> NameId {
        self.sad.name_id(name)
    }

    /// Replaces both SPDs. SA names in PROTECT actions are resolved with
    /// [`IpsecStage::sa_name`]; SAs installed under those names take their
    /// selectors from these entries.
    pub fn set_spd(&mut self, outbound: Vec<SpdEntry>, inbound: Vec<SpdEntry>) {
        self.spd_out = Spd::new(outbound);
        self.spd_in = Spd::new(inbound);
        self.anchors = Anchors::new(&self.spd_out, &self.spd_in);
        self.fast_out = vec![fast::FastOut::UNRESOLVED; self.spd_out.entries().len()];
        self.refs_by_name.clear();
        for (direction, spd) in [
            (Direction::Outbound, &self.spd_out),
            (Direction::Inbound, &self.spd_in),
        ] {
            for (index, entry) in spd.entries().iter().enumerate() {
                if let Action::Protect(names) = &entry.action {
                    for n in names.iter() {
                        self.refs_by_name
                            .entry(*n)
                            .or_default()
                            .push(SpdEntryId { direction, index });
                    }
                }
            }
        }
        let ids: Vec<SaId> = self.sad.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.attach_selectors(id);
        }
        self.spd_generation += 1;
    }

    fn attach_selectors(&mut self, id: SaId) {
        let Some(sa) = self.sad.get(id) else { return };
        let direction = sa.params.direction;
        let refs = sa.name_id.and_then(|n| self.refs_by_name.get(&n));
        let mut selectors = Vec::new();
        let mut entries = Vec::new();
        for r in refs.into_iter().flatten() {
            if r.direction != direction {
                continue;
            }
            let spd = match direction {
                Direction::Outbound => &self.spd_out,
                Direction::Inbound => &self.spd_in,
            };
            if let Some(e) = spd.get(r.index) {
                selectors.push(e.selector);
                entries.push(r.index);
            }
        }
        if let Some(sa) = self.sad.get_mut(id) {
            sa.selectors = selectors;
            sa.spd_entries = entries;
            sa.inner_flow_matched = None;
        }
    }

    /// Installs an SA (replacing one of the same name; see
    /// [`Sad::install`]).
    pub fn install_sa(&mut self, params: SaParams, now: Timestamp) -> Result<SaId, SadError> {
        let mut sa = Sa::new(params, &self.cfg.gcm, now)?;
        self.keep_keys_if_owned(&mut sa);
        self.hold_until_leased(&mut sa);
        let id = self.sad.install(sa)?;
        self.installed(id);
        Ok(id)
    }

    /// Installs an SA already built, taking its inbound SPI from any SA of
    /// another name that holds it (see [`Sad::install_displacing`]): the
    /// step of a reload that can not fail.
    pub(crate) fn install_built(&mut self, mut sa: Sa) -> SaId {
        self.keep_keys_if_owned(&mut sa);
        self.hold_until_leased(&mut sa);
        let id = self.sad.install_displacing(sa);
        self.installed(id);
        id
    }

    /// Under leases, a fresh outbound SA (however it is installed) has
    /// nothing leased: its first packet waits for the lease the control
    /// plane grants in answer to the request raised here.
    fn hold_until_leased(&mut self, sa: &mut Sa) {
        if !self.cfg.sequence_leases
            || sa.params.direction != Direction::Outbound
            || sa.params.negotiated_keys
        {
            return;
        }
        if let Some(k) = sa.keyed.as_mut() {
            k.seq_ceiling = Some(0);
            k.lease_renew_at = 0;
            k.lease_wanted = true;
            self.leases_wanted = true;
        }
    }

    /// Drops the keys of an SA about to be installed unless this stage owns
    /// it (the owner follows the SA's name, so a replacement lands where
    /// its predecessor was).
    fn keep_keys_if_owned(&mut self, sa: &mut Sa) {
        let name = self.sad.name_id(&sa.params.name);
        if !self
            .ownership
            .owns(self.anchors.of(name), sa.params.direction)
        {
            sa.keyed = None;
        }
    }

    fn installed(&mut self, id: SaId) {
        self.attach_selectors(id);
        if let Some(at) = self.sad.get(id).and_then(Sa::next_deadline) {
            self.deadlines.push(Reverse((at, id)));
        }
    }

    /// Whether an outbound SA has asked for a sequence lease: one flag, so
    /// callers can ask on every loop.
    pub fn wants_leases(&self) -> bool {
        self.leases_wanted
    }

    /// Moves the requests of the outbound SAs that want a (new) lease into
    /// `out` and clears them; nothing is scanned unless
    /// [`IpsecStage::wants_leases`]. A request not answered is raised again
    /// by the SA's next packet past its renewal point.
    pub fn take_lease_requests(&mut self, out: &mut Vec<LeaseRequest>) {
        if !std::mem::take(&mut self.leases_wanted) {
            return;
        }
        for (id, sa) in self.sad.iter_mut() {
            let Some(k) = sa.keyed.as_mut() else { continue };
            if std::mem::take(&mut k.lease_wanted) {
                out.push(LeaseRequest {
                    sa: id,
                    name: sa.params.name.clone(),
                    spi: sa.params.spi,
                    identity: sa.lease_identity,
                    last_sent: k.seq_out,
                    ceiling: k.seq_ceiling.unwrap_or(0),
                });
            }
        }
    }

    /// Grants outbound SA `sa` the sequence numbers up to `ceiling`, the
    /// next one above `floor` at least (numbers up to `floor` may have been
    /// sent under the same key before this SA existed). A renewal is asked
    /// for half way to the ceiling, so the data path never waits in steady
    /// state. False when `sa` is not an outbound SA under leases.
    pub fn grant_lease(&mut self, sa: SaId, floor: u64, ceiling: u64) -> bool {
        let Some(sa) = self.sad.get_mut(sa) else {
            return false;
        };
        let outbound = sa.params.direction == Direction::Outbound;
        let Some(k) = sa
            .keyed
            .as_mut()
            .filter(|k| outbound && k.seq_ceiling.is_some())
        else {
            return false;
        };
        k.seq_out = k.seq_out.max(floor);
        let ceiling = ceiling.max(k.seq_out);
        k.seq_ceiling = Some(ceiling);
        k.lease_renew_at = k.seq_out + (ceiling - k.seq_out) / 2 + 1;
        k.lease_wanted = false;
        true
    }

    /// Removes an SA; traffic its policies protect is discarded from now on.
    pub fn remove_sa(&mut self, id: SaId) -> Option<Sa> {
        self.sad.remove(id)
    }

    /// Moves a UDP-encapsulated SA to new ports (the peer's NAT mapped it
    /// anew, RFC 7296 2.23, RFC 3948) in place: its keys, sequence number
    /// and replay window stay, so no (key, sequence number) pair is used
    /// twice. An SA without UDP encapsulation is left as it is (false).
    pub fn set_udp_encap(&mut self, id: SaId, encap: UdpEncap) -> bool {
        match self.sad.get_mut(id) {
            Some(sa) if sa.params.udp_encap.is_some() => {
                sa.params.udp_encap = Some(encap);
                self.sad.params_changed();
                true
            }
            _ => false,
        }
    }

    /// The next event for the control plane.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Moves the next queued outbound fragment into `out`; false when none
    /// is left.
    pub fn poll_transmit(&mut self, out: &mut PacketBuf) -> bool {
        match self.tx_queue.pop_front() {
            Some(mut b) => {
                std::mem::swap(out, &mut b);
                self.spare.push(b);
                true
            }
            None => false,
        }
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let sa = self.deadlines.peek().map(|Reverse((t, _))| *t);
        match (sa, self.reassembler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires SAs whose time lifetimes ran out and fragments that never
    /// completed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.lifetime_check(id, now) {
                if let Some(next) = self.sad.get(id).and_then(Sa::next_deadline) {
                    if next > now {
                        self.deadlines.push(Reverse((next, id)));
                    }
                }
            }
        }
        let expired = self.reassembler.handle_timeout(now);
        self.counters
            .add_drops(DropReason::FragTimeout, expired as u64);
    }

    /// Applies the SA's lifetimes at `now`: raises the soft event once,
    /// removes the SA at the hard limit. Returns whether it is still usable.
    /// Below every limit (the packet path's case) three comparisons.
    #[inline]
    fn lifetime_check(&mut self, id: SaId, now: Timestamp) -> bool {
        match self.sad.get(id) {
            Some(sa) if sa.state != SaState::Stopped && !sa.limit_due(now) => true,
            _ => self.apply_lifetimes(id, now),
        }
    }

    #[cold]
    fn apply_lifetimes(&mut self, id: SaId, now: Timestamp) -> bool {
        let Some(sa) = self.sad.get_mut(id) else {
            return false;
        };
        if sa.state == SaState::Stopped {
            return false;
        }
        // Only the owner tells: the other stages' copies expire silently.
        let owned = sa.is_owned();
        if let Some(limit) = sa.reached(&sa.params.hard, now) {
            let (name, spi, direction) =
                (sa.params.name.clone(), sa.params.spi, sa.params.direction);
            self.sad.remove(id);
            if !owned {
                return false;
            }
            self.events.push_back(Event::HardExpired {
                sa: id,
                name,
                spi,
                direction,
                limit,
            });
            return false;
        }
        if sa.state == SaState::Active {
            if let Some(limit) = sa.reached(&sa.params.soft, now) {
                sa.set_state(SaState::SoftExpired);
                if !owned {
                    return true;
                }
                self.events.push_back(Event::SoftExpired {
                    sa: id,
                    name: sa.params.name.clone(),
                    spi: sa.params.spi,
                    direction: sa.params.direction,
                    limit,
                });
            }
        }
        true
    }

    #[inline]
    fn dropped(&mut self, reason: DropReason) -> Disposition {
        self.counters.record(reason);
        Disposition::Drop(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy;
    use crate::selector::Selector;

    const POLICY: &str = r#"{
      "danger_static_keys_for_counter_mode": true,
      "spd": {"outbound": [{"name": "all", "action": "protect", "sa": "out"}],
              "inbound": [{"name": "all", "action": "protect", "sa": "in"}]},
      "sad": [
        {"name": "out", "direction": "outbound", "spi": 4096, "mode": "tunnel",
         "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"}, "esn": ESN,
         "transform": "aes-gcm-128", "enc_key": "0x000102030405060708090a0b0c0d0e0f10111213"},
        {"name": "in", "direction": "inbound", "spi": 4097, "mode": "tunnel",
         "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"},
         "transform": "aes-gcm-128", "enc_key": "0x000102030405060708090a0b0c0d0e0f10111214"}
      ]}"#;

    fn stage(esn: bool) -> IpsecStage {
        let text = POLICY.replace("ESN", if esn { "true" } else { "false" });
        let set = parse_policy(&text, "t.json").unwrap();
        let mut s = IpsecStage::new(StageConfig::default());
        set.apply(&mut s, Timestamp::ZERO).unwrap();
        s
    }

    fn packet() -> PacketBuf {
        PacketBuf::from_slice(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 59, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2,
        ])
    }

    /// RFC 4303 3.3.3: without ESN the counter stops at 2^32 - 1 and the SA
    /// with it; nothing is sent with a cycled sequence number.
    #[test]
    fn sequence_counter_overflow_stops_the_sa() {
        let mut s = stage(false);
        let id = s.sad.by_name("out").unwrap();
        s.sad.get_mut(id).unwrap().keyed.as_mut().unwrap().seq_out = u64::from(u32::MAX) - 1;
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        assert_eq!(&b.data()[24..28], &u32::MAX.to_be_bytes());
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Drop(DropReason::SeqOverflow)
        );
        assert!(matches!(s.poll_event(), Some(Event::SeqOverflow { .. })));
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Drop(DropReason::NoSa)
        );
        // With ESN the same SA goes on into the next sub-space.
        let mut s = stage(true);
        let id = s.sad.by_name("out").unwrap();
        s.sad.get_mut(id).unwrap().keyed.as_mut().unwrap().seq_out = u64::from(u32::MAX);
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        assert_eq!(&b.data()[24..28], &0u32.to_be_bytes());
        assert_eq!(s.sad.get(id).unwrap().seq(), 1 << 32);
    }

    /// A UDP-encapsulated SA moved to the NAT's new port sends from the
    /// next packet on to it, its sequence numbers going on; an SA without
    /// encapsulation is not given one.
    #[test]
    fn udp_encap_moves_in_place_and_the_sequence_goes_on() {
        let text = POLICY.replace(
            r#""esn": ESN,"#,
            r#""esn": false, "udp_encap": {"local_port": 4500, "remote_port": 4500},"#,
        );
        let set = parse_policy(&text, "t.json").unwrap();
        let mut s = IpsecStage::new(StageConfig::default());
        set.apply(&mut s, Timestamp::ZERO).unwrap();
        let send = |s: &mut IpsecStage| {
            let mut b = packet();
            assert_eq!(
                s.handle_outbound(&mut b, Timestamp::ZERO),
                Disposition::Forward
            );
            let d = b.data();
            // Outer IPv4 (20), UDP (8), then ESP's SPI and sequence.
            (
                u16::from_be_bytes([d[22], d[23]]),
                u32::from_be_bytes([d[32], d[33], d[34], d[35]]),
            )
        };
        assert_eq!(send(&mut s), (4500, 1));
        let out = s.sad.by_name("out").unwrap();
        let moved = UdpEncap {
            local_port: 4500,
            remote_port: 40123,
        };
        assert!(s.set_udp_encap(out, moved));
        assert_eq!(send(&mut s), (40123, 2));
        let inbound = s.sad.by_name("in").unwrap();
        assert!(!s.set_udp_encap(inbound, moved));
        assert_eq!(s.sad.get(inbound).unwrap().params.udp_encap, None);
    }

    /// Held fragments discarded because a fragment of their datagram
    /// arrived after the reassembly timeout are counted, as they are when
    /// `handle_timeout` discards them (they used to vanish uncounted).
    #[test]
    fn fragments_expired_on_arrival_are_counted() {
        let frag = |ident: u8| {
            let mut p = vec![
                0x45, 0, 0, 36, 0, ident, 0x20, 0, 64, 50, 0, 0, 203, 0, 113, 2, 192, 0, 2, 1,
            ];
            p.extend_from_slice(&[0xaa; 16]);
            ip::ipv4_fill_checksum(&mut p);
            PacketBuf::from_slice(&p)
        };
        let mut s = stage(false);
        let t0 = Timestamp::ZERO;
        assert_eq!(s.handle_inbound(&mut frag(1), t0), Disposition::Held);
        assert_eq!(s.handle_inbound(&mut frag(2), t0), Disposition::Held);
        let later = t0.saturating_add(core::time::Duration::from_secs(61));
        // Same datagram as the first: it expires, and this one is held anew.
        assert_eq!(s.handle_inbound(&mut frag(1), later), Disposition::Held);
        assert_eq!(s.counters().drops(DropReason::FragTimeout), 1);
        s.handle_timeout(later);
        assert_eq!(s.counters().drops(DropReason::FragTimeout), 2);
    }

    /// An overlapping fragment discards its whole datagram (RFC 5722):
    /// the fragments held for it are counted as dropped too, not lost.
    #[test]
    fn fragments_discarded_by_an_overlap_are_counted() {
        let frag = |offset_units: u8| {
            let mut p = vec![
                0x45,
                0,
                0,
                36,
                0,
                9,
                0x20,
                offset_units,
                64,
                50,
                0,
                0,
                203,
                0,
                113,
                2,
                192,
                0,
                2,
                1,
            ];
            p.extend_from_slice(&[0xaa; 16]);
            ip::ipv4_fill_checksum(&mut p);
            PacketBuf::from_slice(&p)
        };
        let mut s = stage(false);
        let t0 = Timestamp::ZERO;
        assert_eq!(s.handle_inbound(&mut frag(0), t0), Disposition::Held);
        assert_eq!(s.handle_inbound(&mut frag(2), t0), Disposition::Held);
        // The same bytes again (16..32): an exact duplicate is an overlap.
        assert_eq!(
            s.handle_inbound(&mut frag(2), t0),
            Disposition::Drop(DropReason::FragOverlap)
        );
        assert_eq!(s.counters().drops(DropReason::FragOverlap), 3);
        assert_eq!(s.counters().fragments_held, 2);
    }

    /// The SPD's flow cache never outlives its policy: a packet whose
    /// flow was cached under BYPASS is dropped once `set_spd` says DISCARD,
    /// in both directions, and the new entries' hits start from zero.
    #[test]
    fn set_spd_replaces_cached_decisions() {
        let one = |action: Action| {
            vec![SpdEntry {
                name: "all".into(),
                selector: Selector::ANY,
                action,
            }]
        };
        let mut s = IpsecStage::new(StageConfig::default());
        s.set_spd(one(Action::Bypass), one(Action::Bypass));
        for _ in 0..3 {
            assert_eq!(
                s.handle_outbound(&mut packet(), Timestamp::ZERO),
                Disposition::Forward
            );
            assert_eq!(
                s.handle_inbound(&mut packet(), Timestamp::ZERO),
                Disposition::Deliver
            );
        }
        assert_eq!(s.spd(Direction::Outbound).hits(), &[3]);
        assert_eq!(s.spd(Direction::Inbound).hits(), &[3]);
        s.set_spd(one(Action::Discard), one(Action::Discard));
        assert_eq!(
            s.handle_outbound(&mut packet(), Timestamp::ZERO),
            Disposition::Drop(DropReason::PolicyDiscard)
        );
        assert_eq!(
            s.handle_inbound(&mut packet(), Timestamp::ZERO),
            Disposition::Drop(DropReason::PolicyDiscard)
        );
        assert_eq!(s.spd(Direction::Outbound).hits(), &[1]);
        assert_eq!(s.spd(Direction::Inbound).hits(), &[1]);
        assert_eq!(s.counters().outbound_bypassed, 3);
        assert_eq!(s.counters().inbound_bypassed, 3);
    }

    /// A stage that replaces another (built from the same policies, so with
    /// as many changes behind it) never gives out the other's generation,
    /// so caches keyed on it start afresh.
    #[test]
    fn a_replacing_stage_never_repeats_the_generation() {
        let old = stage(false);
        let new = stage(false);
        assert_eq!(old.sad().len(), new.sad().len());
        assert_ne!(old.query().generation(), new.query().generation());
    }

    /// A rekey: the inbound SA is replaced by one with a new SPI; the old
    /// one keeps working until the new one has verified a packet.
    #[test]
    fn replaced_inbound_sa_retires_after_first_use_of_the_new_one() {
        let mut s = stage(false);
        let old = s.sad.by_name("in").unwrap();
        let mut params = s.sad.get(old).unwrap().params.clone();
        params.spi = 5000;
        params.enc_key = zeroize::Zeroizing::new(vec![7u8; 20]);
        let gen = s.query().generation();
        let new = s.install_sa(params, Timestamp::ZERO).unwrap();
        assert_ne!(s.query().generation(), gen);
        assert_eq!(
            s.query().inbound_sa(4097).map(|i| i.slot),
            Some(old.index())
        );
        assert_eq!(
            s.query().inbound_sa(5000).map(|i| i.slot),
            Some(new.index())
        );
        assert_eq!(s.query().sa_by_name("in").map(|i| i.spi), Some(5000));
        assert_eq!(s.sad.get(new).unwrap().selectors().len(), 1);
        s.sad.confirm_in_use(new);
        assert!(s.query().inbound_sa(4097).is_none());
        assert_eq!(s.sad.len(), 2);
    }

    fn leased_stage() -> IpsecStage {
        let text = POLICY.replace("ESN", "false");
        let set = parse_policy(&text, "t.json").unwrap();
        let mut s = IpsecStage::new(StageConfig {
            sequence_leases: true,
            ..StageConfig::default()
        });
        set.apply(&mut s, Timestamp::ZERO).unwrap();
        s
    }

    fn send(s: &mut IpsecStage) -> Disposition {
        s.handle_outbound(&mut packet(), Timestamp::ZERO)
    }

    /// Under leases a fresh outbound SA sends nothing until a lease is
    /// granted: its packets are dropped and counted, no sequence number is
    /// spent, and it asks (once) for a lease; inbound SAs never ask.
    #[test]
    fn a_fresh_sa_sends_nothing_before_its_lease() {
        let mut s = leased_stage();
        let out = s.sad.by_name("out").unwrap();
        assert!(s.wants_leases());
        let mut reqs = Vec::new();
        s.take_lease_requests(&mut reqs);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].sa, out);
        assert_eq!(
            (reqs[0].spi, reqs[0].last_sent, reqs[0].ceiling),
            (4096, 0, 0)
        );
        assert!(!s.wants_leases());
        assert_eq!(
            send(&mut s),
            Disposition::Drop(DropReason::SeqLeaseExhausted)
        );
        assert_eq!(
            send(&mut s),
            Disposition::Drop(DropReason::SeqLeaseExhausted)
        );
        assert_eq!(s.counters().drops(DropReason::SeqLeaseExhausted), 2);
        assert_eq!(s.sad.get(out).unwrap().seq(), 0);
        // The dropped packets raised the request again.
        assert!(s.wants_leases());
    }

    /// An SA whose keys were negotiated for it alone (IKEv2) sends at once
    /// under leases: no lease is asked for, none is needed (new keys after
    /// a restart), so none is written.
    #[test]
    fn an_sa_with_negotiated_keys_needs_no_lease() {
        let mut s = leased_stage();
        let out = s.sad.by_name("out").unwrap();
        let mut params = s.sad.get(out).unwrap().params().clone();
        params.spi = 8192;
        params.enc_key = zeroize::Zeroizing::new(vec![0x42; params.transform.enc_key_len()]);
        params.auth_key = zeroize::Zeroizing::new(vec![0x24; params.transform.auth_key_len()]);
        params.negotiated_keys = true;
        let mut reqs = Vec::new();
        s.take_lease_requests(&mut reqs);
        s.install_sa(params, Timestamp::ZERO).unwrap();
        assert!(!s.wants_leases());
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        assert_eq!(&b.data()[20..24], &8192u32.to_be_bytes());
        assert_eq!(&b.data()[24..28], &1u32.to_be_bytes());
        reqs.clear();
        s.take_lease_requests(&mut reqs);
        assert!(reqs.is_empty(), "{reqs:?}");
    }

    /// A grant raises the next sequence number above the floor and lets
    /// the SA send up to the ceiling, never past it; a renewal is asked for
    /// half way, and a renewal continues where the SA is, skipping nothing.
    #[test]
    fn the_ceiling_is_enforced_and_renewed_half_way() {
        let mut s = leased_stage();
        let out = s.sad.by_name("out").unwrap();
        let mut reqs = Vec::new();
        s.take_lease_requests(&mut reqs);
        assert!(s.grant_lease(out, 100, 104));
        assert!(!s.wants_leases());
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        assert_eq!(&b.data()[24..28], &101u32.to_be_bytes());
        assert_eq!(send(&mut s), Disposition::Forward); // 102
        assert!(!s.wants_leases());
        assert_eq!(send(&mut s), Disposition::Forward); // 103: half way
        assert!(s.wants_leases());
        assert_eq!(send(&mut s), Disposition::Forward); // 104
        assert_eq!(
            send(&mut s),
            Disposition::Drop(DropReason::SeqLeaseExhausted)
        );
        assert_eq!(s.sad.get(out).unwrap().seq(), 104);
        reqs.clear();
        s.take_lease_requests(&mut reqs);
        assert_eq!((reqs[0].last_sent, reqs[0].ceiling), (104, 104));
        // A floor below what was sent moves nothing back.
        assert!(s.grant_lease(out, 0, 200));
        let mut b = packet();
        assert_eq!(
            s.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        assert_eq!(&b.data()[24..28], &105u32.to_be_bytes());
        assert_eq!(s.sad.get(out).unwrap().seq_ceiling(), Some(200));
        // Inbound SAs take no leases.
        let inbound = s.sad.by_name("in").unwrap();
        assert!(!s.grant_lease(inbound, 0, 10));
    }

    /// Of several worker stages exactly one owns an SA: it alone seals
    /// with it; the others hold no keys and drop its packets as
    /// `not_owner`. A replacement under the same name stays with the same
    /// owner, and the owner map says who that is.
    #[test]
    fn one_worker_stage_owns_each_sa_across_replacements() {
        let workers = 3;
        let mut stages: Vec<IpsecStage> = (0..workers)
            .map(|worker| {
                let mut s = stage(false);
                s.set_ownership(StageOwnership::Worker { worker, workers });
                s
            })
            .collect();
        let owner = |stages: &mut Vec<IpsecStage>| {
            let results: Vec<Disposition> = stages.iter_mut().map(send).collect();
            let owners: Vec<usize> = (0..workers)
                .filter(|w| results[*w] == Disposition::Forward)
                .collect();
            assert_eq!(owners.len(), 1, "{results:?}");
            for (w, r) in results.iter().enumerate() {
                if w != owners[0] {
                    assert_eq!(*r, Disposition::Drop(DropReason::NotOwner));
                    let id = stages[w].sad.by_name("out").unwrap();
                    assert!(!stages[w].sad.get(id).unwrap().is_owned());
                }
            }
            owners[0]
        };
        let first = owner(&mut stages);
        let key = flow_key(
            packet().data(),
            &ip::parse(packet().data()).unwrap(),
            Direction::Outbound,
        );
        let mut observer = stage(false);
        observer.set_ownership(StageOwnership::Observer { workers });
        assert_eq!(observer.owner_map().outbound_owner(&key), Some(first));
        assert_eq!(send(&mut observer), Disposition::Drop(DropReason::NotOwner));
        // Replaced (new SPI and key) and removed and re-added: same owner.
        let mut params = stages[first]
            .sad
            .get(stages[first].sad.by_name("out").unwrap())
            .unwrap()
            .params
            .clone();
        params.spi = 0x5000;
        params.enc_key = zeroize::Zeroizing::new(vec![9u8; 20]);
        for s in stages.iter_mut().chain([&mut observer]) {
            s.install_sa(params.clone(), Timestamp::ZERO).unwrap();
        }
        assert_eq!(owner(&mut stages), first);
        for s in stages.iter_mut().chain([&mut observer]) {
            let id = s.sad.by_name("out").unwrap();
            s.remove_sa(id);
            s.install_sa(params.clone(), Timestamp::ZERO).unwrap();
        }
        assert_eq!(owner(&mut stages), first);
        assert_eq!(observer.owner_map().outbound_owner(&key), Some(first));
        // The inbound SA has one owner too, and the map knows it by SPI.
        let inbound = observer.owner_map().inbound_owner(4097).unwrap();
        let holders: Vec<usize> = (0..workers)
            .filter(|w| {
                let id = stages[*w].sad.by_name("in").unwrap();
                stages[*w].sad.get(id).unwrap().is_owned()
            })
            .collect();
        assert_eq!(holders, vec![inbound]);
    }

    /// Parse once: a walk and an SPD decision handed over are used, not
    /// made again; a decision made against another SPD (a policy that
    /// changed in between) is made anew, so it can never pick another
    /// SPD's entry.
    #[test]
    fn a_walked_packet_is_not_walked_or_classified_again() {
        let mut s = stage(false);
        let meta = ip::parse(packet().data()).unwrap();
        let key = flow_key(packet().data(), &meta, Direction::Outbound);
        let fresh = crate::walked::SpdDecision::classify(s.spd(Direction::Outbound), &key);
        let walked = Walked {
            meta,
            spd: Some(fresh),
        };
        let d = s.handle_outbound_walked(&mut packet(), Timestamp::ZERO, Some(&walked));
        assert_eq!(d, Disposition::Forward);
        assert_eq!(s.parse_counts(), ParseCounts::default());
        assert_eq!(s.spd(Direction::Outbound).hits(), &[1]);
        // A BYPASS entry for other traffic comes first, then DISCARD: the
        // old decision (entry 0) would now bypass, and is not taken.
        let mut elsewhere = Selector::ANY;
        elsewhere.proto = crate::selector::ProtoSel::Is(proto::TCP);
        s.set_spd(
            vec![
                SpdEntry {
                    name: "tcp".into(),
                    selector: elsewhere,
                    action: Action::Bypass,
                },
                SpdEntry {
                    name: "all".into(),
                    selector: Selector::ANY,
                    action: Action::Discard,
                },
            ],
            Vec::new(),
        );
        let d = s.handle_outbound_walked(&mut packet(), Timestamp::ZERO, Some(&walked));
        assert_eq!(d, Disposition::Drop(DropReason::PolicyDiscard));
        assert_eq!(
            s.parse_counts(),
            ParseCounts {
                ip_walks: 0,
                spd_classifications: 1
            }
        );
        // Without a walk the stage walks and classifies once itself.
        let _ = s.handle_outbound(&mut packet(), Timestamp::ZERO);
        assert_eq!(
            s.parse_counts(),
            ParseCounts {
                ip_walks: 1,
                spd_classifications: 2
            }
        );
    }

    /// Without leases (replay, benchmarks) nothing changes: SAs send from
    /// 1 and never ask.
    #[test]
    fn without_leases_sas_send_at_once() {
        let mut s = stage(false);
        assert!(!s.wants_leases());
        assert_eq!(send(&mut s), Disposition::Forward);
        let mut reqs = Vec::new();
        s.take_lease_requests(&mut reqs);
        assert!(reqs.is_empty());
    }
}
