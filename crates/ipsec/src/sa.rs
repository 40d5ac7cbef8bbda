//! Security associations (RFC 4301 4.4.2): parameters, keyed state,
//! sequence counters, anti-replay window, lifetimes and statistics.

use crate::anti_replay::ReplayWindow;
use crate::crypto::{Transform, TransformId};
use crate::gcm_choice::{BackendSetting, GcmPreference};
use crate::selector::{Addr, Selector};
pub use bitsgw_ipsec_query::sa::{Direction, Mode, SaState, UdpEncap};
use bitsgw_wire::Timestamp;
use zeroize::Zeroizing;

/// Lifetime limits of one kind (soft or hard); `None` is no limit
/// (RFC 4301 4.4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Seconds since the SA was installed.
    pub seconds: Option<u64>,
    /// Bytes of payload protected or verified.
    pub bytes: Option<u64>,
    /// Packets protected or verified.
    pub packets: Option<u64>,
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Time.
    Time,
    /// Bytes.
    Bytes,
    /// Packets.
    Packets,
}

impl LimitKind {
    /// "time", "bytes" or "packets".
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Time => "time",
            LimitKind::Bytes => "bytes",
            LimitKind::Packets => "packets",
        }
    }
}

/// Everything needed to install an SA. Keys are zeroized when this is
/// dropped.
#[derive(Clone)]
pub struct SaParams {
    /// The SA's name (as the SPD refers to it).
    pub name: String,
    /// Direction.
    pub direction: Direction,
    /// SPI.
    pub spi: u32,
    /// Mode.
    pub mode: Mode,
    /// Transform.
    pub transform: TransformId,
    /// AES-GCM backend, or `auto` (the stage's preference).
    pub backend: BackendSetting,
    /// Encryption key (with salt for the AEADs).
    pub enc_key: Zeroizing<Vec<u8>>,
    /// Authentication key.
    pub auth_key: Zeroizing<Vec<u8>>,
    /// Anti-replay window in packets (0 = off). Inbound only.
    pub replay_window: u32,
    /// Extended sequence numbers (RFC 4303 2.2.1).
    pub esn: bool,
    /// Soft lifetime: raises an event.
    pub soft: Limits,
    /// Hard lifetime: removes the SA.
    pub hard: Limits,
    /// UDP encapsulation, if any.
    pub udp_encap: Option<UdpEncap>,
    /// The destination of ESP packets of this SA (RFC 4301 4.1), checked on
    /// inbound SAs when known.
    pub destination: Option<Addr>,
    /// The keys were negotiated for this SA alone (IKEv2 KEYMAT, RFC 7296
    /// 2.17) and are never installed again after a restart, which
    /// negotiates new ones: a (key, sequence number) pair can not recur, so
    /// the SA needs no sequence lease (and leaves no entry in the lease
    /// file). Configured (static) keys always lease.
    pub negotiated_keys: bool,
}

impl core::fmt::Debug for SaParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SaParams")
            .field("name", &self.name)
            .field("direction", &self.direction)
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("mode", &self.mode)
            .field("transform", &self.transform)
            .field("keys", &"<masked>")
            .finish_non_exhaustive()
    }
}

impl SaParams {
    /// A digest of every parameter, keys included (never shown; it only
    /// tells whether two parameter sets are the same).
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"bitsgw sa params v1\0");
        let fields = format!(
            "{}|{:?}|{}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}",
            self.name,
            self.direction,
            self.spi,
            self.mode,
            self.transform,
            self.backend,
            self.replay_window,
            self.esn,
            self.soft,
            self.hard,
            self.udp_encap,
            self.destination,
            self.negotiated_keys
        );
        h.update((fields.len() as u64).to_be_bytes());
        h.update(fields.as_bytes());
        h.update((self.enc_key.len() as u64).to_be_bytes());
        h.update(&self.enc_key[..]);
        h.update((self.auth_key.len() as u64).to_be_bytes());
        h.update(&self.auth_key[..]);
        h.finalize().into()
    }
}

impl SaParams {
    /// The identity under which an outbound SA's sequence numbers are
    /// leased: SHA-256 over a label, the SPI and the keys. Two SAs with the
    /// same SPI and keys share a nonce space (whatever their names), so a
    /// re-added SA continues above the old one's lease; the digest does not
    /// reveal the key.
    pub fn lease_identity(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"bitsgw sequence lease v1\0");
        h.update(self.spi.to_be_bytes());
        h.update((self.enc_key.len() as u64).to_be_bytes());
        h.update(&self.enc_key[..]);
        h.update((self.auth_key.len() as u64).to_be_bytes());
        h.update(&self.auth_key[..]);
        h.finalize().into()
    }
}

/// Per-SA statistics, as `ip -s xfrm state` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaStats {
    /// Packets protected (outbound) or verified (inbound).
    pub packets: u64,
    /// Bytes of those packets' payload.
    pub bytes: u64,
    /// ICV failures.
    pub icv_failures: u64,
    /// Replay drops (duplicates and too old).
    pub replay_drops: u64,
    /// Other drops attributed to this SA (padding, selectors, inner packet).
    pub other_drops: u64,
}

/// What only an SA's owner holds (see [`crate::ownership`]): its keys,
/// its outbound sequence counter or inbound anti-replay window, and its
/// sequence lease. A stage that does not own the SA has none of it, so it
/// can neither seal nor open with the SA, and no second counter or window
/// exists anywhere.
pub(crate) struct Keyed {
    pub(crate) transform: Transform,
    /// Outbound: the last sequence number sent.
    pub(crate) seq_out: u64,
    /// Inbound: the anti-replay window.
    pub(crate) replay: ReplayWindow,
    /// Outbound under sequence leases: the highest sequence number leased,
    /// which may be sent; `None` when the stage does not lease.
    pub(crate) seq_ceiling: Option<u64>,
    /// The sequence number from which a new lease is asked for (half way
    /// into the current one); `u64::MAX` when leases are off, so the data
    /// path's check is one comparison.
    pub(crate) lease_renew_at: u64,
    /// Whether this SA waits for a (new) lease.
    pub(crate) lease_wanted: bool,
}

/// When the next lifetime limit of an SA's current state can first be
/// reached: the lowest packet count, byte count and time among the limits
/// [`Sa::reached`] would test (RFC 4301 4.4.2.1). Below all three no limit
/// is reached, so the data path compares three numbers per packet and
/// evaluates the limits only when one of them is met; the packet and byte
/// limits are thereby still applied to the exact packet that reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) at: Timestamp,
}

/// An installed SA.
pub struct Sa {
    pub(crate) params: SaParams,
    /// The keys and sequence state, in the owner's stage only.
    pub(crate) keyed: Option<Keyed>,
    /// The AES-GCM backend its transform is keyed on (the `auto` setting
    /// resolved; known also where the keys are not held).
    pub(crate) backend: crate::crypto::GcmBackend,
    pub(crate) stats: SaStats,
    pub(crate) installed_at: Timestamp,
    pub(crate) state: SaState,
    /// When a lifetime limit of `state` can first be reached (see [`Due`]);
    /// kept by [`Sa::set_state`].
    pub(crate) due: Due,
    /// Selectors of the SPD entries that use this SA (RFC 4301 4.4.2: the
    /// SA's selectors), in the orientation of its direction.
    pub(crate) selectors: Vec<Selector>,
    /// Positions of those SPD entries in their direction's SPD.
    pub(crate) spd_entries: Vec<usize>,
    /// Inbound: the flow of the last inner packet the selectors passed
    /// (RFC 4301 5.2 step 4), whose packets need not be matched again
    /// while the selectors stay as they are.
    pub(crate) inner_flow_matched: Option<crate::selector::FlowKey>,
    /// The SAD's slot for its name, set when it is installed.
    pub(crate) name_id: Option<crate::sad::NameId>,
    /// Digest of the parameters it was installed with, keys included, so a
    /// reload can tell an unchanged SA (kept, with its counters) from a
    /// changed one (replaced).
    pub(crate) fingerprint: [u8; 32],
    /// Which key stream the sequence numbers of this SA belong to (see
    /// [`SaParams::lease_identity`]).
    pub(crate) lease_identity: [u8; 32],
}

impl core::fmt::Debug for Sa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sa")
            .field("params", &self.params)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sa {
    /// Keys the transform (an `auto` backend as `gcm` prefers) and sets up
    /// counters. The keys in `params` are zeroized here: the keyed
    /// transform is all that is kept.
    pub fn new(
        mut params: SaParams,
        gcm: &GcmPreference,
        now: Timestamp,
    ) -> Result<Self, crate::crypto::CryptoError> {
        let fingerprint = params.fingerprint();
        let lease_identity = params.lease_identity();
        let backend = params.backend.resolve(params.transform, gcm);
        let transform =
            Transform::new(params.transform, backend, &params.enc_key, &params.auth_key)?;
        params.enc_key = Zeroizing::new(Vec::new());
        params.auth_key = Zeroizing::new(Vec::new());
        let replay = ReplayWindow::new(
            if params.direction == Direction::Inbound {
                params.replay_window
            } else {
                0
            },
            params.esn,
        );
        let mut sa = Sa {
            params,
            keyed: Some(Keyed {
                transform,
                seq_out: 0,
                replay,
                seq_ceiling: None,
                lease_renew_at: u64::MAX,
                lease_wanted: false,
            }),
            backend,
            stats: SaStats::default(),
            installed_at: now,
            state: SaState::Active,
            due: Due {
                packets: 0,
                bytes: 0,
                at: Timestamp::ZERO,
            },
            selectors: Vec::new(),
            spd_entries: Vec::new(),
            inner_flow_matched: None,
            name_id: None,
            fingerprint,
            lease_identity,
        };
        sa.set_state(SaState::Active);
        Ok(sa)
    }

    /// Moves the SA to `state` and works out when a limit of that state can
    /// next be reached. The only writer of `state`.
    pub(crate) fn set_state(&mut self, state: SaState) {
        self.state = state;
        let (soft, hard) = (&self.params.soft, &self.params.hard);
        let active = state == SaState::Active;
        let lowest = |soft: Option<u64>, hard: Option<u64>| {
            let soft = soft.filter(|_| active).unwrap_or(u64::MAX);
            soft.min(hard.unwrap_or(u64::MAX))
        };
        self.due = Due {
            packets: lowest(soft.packets, hard.packets),
            bytes: lowest(soft.bytes, hard.bytes),
            at: self.next_deadline().unwrap_or(Timestamp(u64::MAX)),
        };
    }

    /// Whether a lifetime limit may be reached at `now` with the counts so
    /// far: false means [`Sa::reached`] finds none for the current state.
    #[inline(always)]
    pub(crate) fn limit_due(&self, now: Timestamp) -> bool {
        self.stats.packets >= self.due.packets
            || self.stats.bytes >= self.due.bytes
            || now >= self.due.at
    }

    /// The SA's parameters (keys already wiped).
    pub fn params(&self) -> &SaParams {
        &self.params
    }

    /// The AES-GCM backend the SA uses (its `auto` setting resolved).
    pub fn backend(&self) -> crate::crypto::GcmBackend {
        self.backend
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.params.name
    }

    /// SPI.
    pub fn spi(&self) -> u32 {
        self.params.spi
    }

    /// Statistics.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }

    /// Lifecycle state.
    pub fn state(&self) -> SaState {
        self.state
    }

    /// The SA's selectors.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Outbound: last sequence number sent. Inbound: highest received.
    /// 0 in a stage that does not own the SA.
    pub fn seq(&self) -> u64 {
        match (&self.keyed, self.params.direction) {
            (Some(k), Direction::Outbound) => k.seq_out,
            (Some(k), Direction::Inbound) => k.replay.top(),
            (None, _) => 0,
        }
    }

    /// Whether this stage owns the SA: holds its keys and its sequence
    /// counter or replay window (see [`crate::ownership`]).
    pub fn is_owned(&self) -> bool {
        self.keyed.is_some()
    }

    /// The highest sequence number leased (outbound SAs of a stage with
    /// sequence leases; see [`crate::stage::IpsecStage::grant_lease`]).
    pub fn seq_ceiling(&self) -> Option<u64> {
        self.keyed.as_ref().and_then(|k| k.seq_ceiling)
    }

    /// When it was installed.
    pub fn installed_at(&self) -> Timestamp {
        self.installed_at
    }

    /// The first limit of `limits` this SA has reached at `now`, if any.
    pub(crate) fn reached(&self, limits: &Limits, now: Timestamp) -> Option<LimitKind> {
        if limits.packets.is_some_and(|p| self.stats.packets >= p) {
            return Some(LimitKind::Packets);
        }
        if limits.bytes.is_some_and(|b| self.stats.bytes >= b) {
            return Some(LimitKind::Bytes);
        }
        if limits
            .seconds
            .is_some_and(|s| now.saturating_since(self.installed_at).as_secs() >= s)
        {
            return Some(LimitKind::Time);
        }
        None
    }

    /// The time at which the next time-based limit falls due.
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        let at = |limits: &Limits| {
            limits.seconds.map(|s| {
                self.installed_at
                    .saturating_add(core::time::Duration::from_secs(s))
            })
        };
        match self.state {
            SaState::Active => match (at(&self.params.soft), at(&self.params.hard)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            SaState::SoftExpired => at(&self.params.hard),
            SaState::Stopped => None,
        }
    }
}
