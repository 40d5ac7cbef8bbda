//! One SA, one owner: which of several stages holds an SA's keys, its
//! outbound sequence counter and its inbound anti-replay window.
//!
//! A threaded pipeline runs one stage per worker, all built from the same
//! policies and changed by the same controls in the same order. Each stage
//! is told its place ([`StageOwnership`]) and keeps the keyed state only of
//! the SAs it owns; the others' entries hold parameters and selectors, no
//! keys, so a stage can not seal or open with an SA it does not own (the
//! packet is dropped as [`crate::DropReason::NotOwner`]). Two threads can
//! therefore never send the same (key, sequence number), which is the
//! nonce of AES-GCM and ChaCha20-Poly1305, nor both accept one packet.
//!
//! The owner of an SA is a function of its name's slot in the SAD, which
//! is never freed, so replacing, removing and re-adding an SA (a reload, a
//! control, a lifetime, a rekey) lands it on the same worker: there is no
//! moment with two owners. A bundle is owned as a whole: every SA of a
//! PROTECT entry's bundle is anchored at the bundle's first (innermost) SA
//! and has that SA's owner. An SA may be in one bundle only (the policy
//! loader refuses more, naming the entries); a stage given such SPDs
//! anyway anchors the SA at the first bundle: the other bundle's packets
//! reach the owner of that bundle's first SA and are dropped as
//! `not_owner` there if it lacks the shared one, never sealed twice.
//!
//! An SA keeps the owner it was installed with for its life: an SPD
//! change that would anchor an installed SA elsewhere does not move its
//! keys (its packets elsewhere are `not_owner` drops until it is
//! replaced).
//!
//! [`OwnerMap`] is the read-only answer a dispatcher needs: which worker
//! owns the SA an outbound flow or an inbound SPI uses.

use crate::sa::Direction;
use crate::sad::NameId;
use crate::selector::FlowKey;
use crate::spd::{Action, Spd};
use crate::walked::SpdDecision;
use rustc_hash::FxHashMap;

/// Which SAs a stage owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StageOwnership {
    /// Every SA: the only stage there is (a single worker, replay,
    /// benchmarks, tests).
    #[default]
    All,
    /// One of `workers` worker stages: the SAs whose owner is `worker`.
    Worker {
        /// This worker, from 0.
        worker: usize,
        /// How many there are.
        workers: usize,
    },
    /// None: a copy that only says who owns what (a dispatcher's source).
    Observer {
        /// How many workers own the SAs.
        workers: usize,
    },
    /// Run to completion: the SAs of one direction (the host port's thread
    /// sends with the outbound SAs, the network port's receives with the
    /// inbound ones).
    Direction(Direction),
}

impl StageOwnership {
    /// The owner (a worker, from 0) of the SAs anchored at `anchor` that
    /// run in `direction`. Running to completion, 0 is the host port's
    /// thread and 1 the network port's.
    pub fn owner(self, anchor: NameId, direction: Direction) -> usize {
        match self {
            StageOwnership::All => 0,
            StageOwnership::Worker { workers, .. } | StageOwnership::Observer { workers } => {
                anchor.0 as usize % workers.max(1)
            }
            StageOwnership::Direction(_) => match direction {
                Direction::Outbound => 0,
                Direction::Inbound => 1,
            },
        }
    }

    /// Whether this stage owns the SAs anchored at `anchor` in `direction`.
    pub fn owns(self, anchor: NameId, direction: Direction) -> bool {
        match self {
            StageOwnership::All => true,
            StageOwnership::Worker { worker, .. } => self.owner(anchor, direction) == worker,
            StageOwnership::Observer { .. } => false,
            StageOwnership::Direction(mine) => mine == direction,
        }
    }
}

/// The anchor of every SA name that is part of a bundle: the bundle's first
/// SA. Names in no bundle are their own anchor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Anchors {
    of: FxHashMap<NameId, NameId>,
}

impl Anchors {
    /// The anchors the PROTECT bundles of both SPDs set; an SA in two
    /// bundles keeps the first one's (see the module documentation).
    pub(crate) fn new(outbound: &Spd, inbound: &Spd) -> Self {
        let mut of = FxHashMap::default();
        for entry in outbound.entries().iter().chain(inbound.entries()) {
            if let Action::Protect(names) = &entry.action {
                if let [first, rest @ ..] = &names[..] {
                    if !rest.is_empty() {
                        for n in names.iter() {
                            of.entry(*n).or_insert(*first);
                        }
                    }
                }
            }
        }
        Anchors { of }
    }

    /// The name `name`'s ownership follows.
    pub(crate) fn of(&self, name: NameId) -> NameId {
        self.of.get(&name).copied().unwrap_or(name)
    }
}

/// Which worker owns what, as a dispatcher reads it: a copy of the outbound
/// SPD to classify flows, the owner of each outbound entry's bundle and of
/// each inbound SPI. Made by [`crate::IpsecStage::owner_map`] after each
/// change; read-only, so threads share it without a lock.
#[derive(Debug, Clone)]
pub struct OwnerMap {
    generation: u64,
    spd_out: Spd,
    entry_owner: Vec<Option<usize>>,
    spi_owner: FxHashMap<u32, usize>,
    udp_encap_ports: Vec<u16>,
}

impl OwnerMap {
    pub(crate) fn new(
        generation: u64,
        spd_out: Spd,
        entry_owner: Vec<Option<usize>>,
        spi_owner: FxHashMap<u32, usize>,
        udp_encap_ports: Vec<u16>,
    ) -> Self {
        OwnerMap {
            generation,
            spd_out,
            entry_owner,
            spi_owner,
            udp_encap_ports,
        }
    }

    /// The query generation of the stage it was made from: answers cached
    /// under it hold until it changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker that owns the SAs protecting `key` sent now; `None` if no
    /// PROTECT entry covers it.
    pub fn outbound_owner(&self, key: &FlowKey) -> Option<usize> {
        self.decision_owner(&self.classify(key))
    }

    /// Classifies `key` by the outbound SPD, as the stages will.
    pub fn classify(&self, key: &FlowKey) -> SpdDecision {
        SpdDecision::classify(&self.spd_out, key)
    }

    /// The fingerprint of the outbound SPD decisions are made against.
    pub fn spd_fingerprint(&self) -> u64 {
        self.spd_out.fingerprint()
    }

    /// The worker that owns the SAs of the entry `decision` found; `None`
    /// if that entry does not PROTECT.
    pub fn decision_owner(&self, decision: &SpdDecision) -> Option<usize> {
        self.entry_owner.get(decision.entry?).copied().flatten()
    }

    /// The worker that owns the inbound SA with this SPI.
    pub fn inbound_owner(&self, spi: u32) -> Option<usize> {
        self.spi_owner.get(&spi).copied()
    }

    /// Every outbound SPD entry's selectors, in order, with the owner of
    /// its bundle (`None` if it does not PROTECT).
    pub fn outbound_entries(
        &self,
    ) -> impl Iterator<Item = (&crate::selector::Selector, Option<usize>)> + '_ {
        self.spd_out
            .entries()
            .iter()
            .zip(&self.entry_owner)
            .map(|(e, owner)| (&e.selector, *owner))
    }

    /// Every inbound SPI with its owner, in no particular order.
    pub fn inbound_owners(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.spi_owner.iter().map(|(spi, owner)| (*spi, *owner))
    }

    /// The UDP ports on which ESP-in-UDP is recognised.
    pub fn udp_encap_ports(&self) -> &[u16] {
        &self.udp_encap_ports
    }
}
