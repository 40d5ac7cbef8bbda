//! Queues mode: one receive queue per core, each running to completion.
//!
//! Each queue is a thread with a receiving handle of its own on both
//! ports (for `AF_PACKET`, one socket per queue in a `PACKET_FANOUT`
//! group per interface, `bitsgw_io::af_packet_fanout`), a gateway of its
//! own and sending handles of its own. It takes the frames its handles
//! receive, walks them once and handles those whose SA it owns itself,
//! start to finish: a frame that stays never changes threads.
//!
//! One SA, one owner: queue `q` of `n` owns what worker `q` of `n` would
//! ([`StageOwnership::Worker`], the SA's name slot modulo `n`). Left to
//! itself (`bitsgw_io::Fanout::FlowHash`) the kernel spreads frames by its
//! flow hash, which knows nothing of SAs: inbound
//! ESP hashes by outer addresses and SPI, so one SA's frames from one
//! peer reach one queue, but not necessarily its owner; outbound, the
//! flows one SA protects may reach every queue. A frame whose SA another
//! queue owns is handed to that queue in a batch over a bounded channel
//! (its inbox) and counted there as `handed_over`; a full inbox drops the
//! batch as `queue_full`. Frames of no SA (bypass, discard, the
//! appliance's own traffic, non-IP) stay on the queue that received them,
//! which keeps a flow's order as the kernel's hash does.
//!
//! Outbound, the host port's group can be told the outbound SPD's IPv4
//! entries and their owners ([`RxPort::steer_by_rules`], `AF_PACKET` ports
//! opened with `bitsgw_io::Fanout::ByRules`): a frame then reaches the
//! owner of the first entry its addresses and protocol match, which is
//! its SA's owner unless the SPD picks by ports too.
//!
//! Inbound, the owner can be known before the frame is received: the
//! network port's group can be told which queue owns each SPI
//! ([`RxPort::steer_by_spi`]; `AF_PACKET` ports opened with
//! `bitsgw_io::Fanout::BySpi` then run a classic BPF fanout program made
//! from that table, `bitsgw_io::steering`), and the first queue tells it
//! again after every change of owners. ESP then reaches its owner
//! directly; only frames of SAs changed since, of SPIs past the
//! program's limit, and reassembled fragments may still be handed over.
//!
//! A queue polls: its two ports and its inbox in turn, without waiting,
//! while any of them has work; then spinning briefly, napping
//! ([`IDLE_NAP`]) and, idle for longer, waiting on each port in turn for
//! at most [`IDLE_WAIT`], so an idle queue sleeps in the kernel and a
//! frame that reaches an idle queue waits at most about that long.
//!
//! The mobility roles keep their binding state in one gateway and do not
//! run in this mode (the appliance refuses it for them).

use super::*;
use crate::port::SteerRule;
use bitsgw_ipsec::selector::{AddrSel, Family, ProtoSel};

/// Turns a queue spins for work before it naps.
const IDLE_SPINS: u32 = 64;
/// What an idle queue sleeps between looks, for its first [`IDLE_NAPS`]
/// looks.
pub(super) const IDLE_NAP: Duration = Duration::from_micros(50);
/// Naps before a queue waits in the kernel instead.
const IDLE_NAPS: u32 = 100;
/// How long an idle queue waits on one port before it looks at the other
/// and at its inbox.
pub(super) const IDLE_WAIT: Duration = Duration::from_millis(1);

/// The receiving handles of one queue.
#[derive(Debug)]
pub struct QueuePorts {
    /// This queue's handle on the host port.
    pub host: Port,
    /// This queue's handle on the network port.
    pub network: Port,
}

/// How the queues are set up.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Batches a queue's inbox (frames other queues hand over) holds.
    pub inbox_depth: usize,
}

/// The queue of `queues` that owns an SA whose owner map answer is
/// `owner`, and where a frame received on `queue` goes: its owner, or
/// the receiving queue for frames of no SA. Pure, so it can be checked
/// on its own.
pub fn queue_for(owner: Option<usize>, queue: usize, queues: usize) -> usize {
    owner.map_or(queue, |o| o % queues.max(1))
}

/// The host side's steering rules: the outbound SPD's entries over IPv4
/// (or any address), in order, each to the owner of its SAs (none for an
/// entry that does not PROTECT). Entries of IPv6 ranges are left out: no
/// IPv4 frame matches them.
pub fn steer_rules(owners: &OwnerMap) -> Vec<SteerRule> {
    let v4 = |a: &AddrSel| match *a {
        AddrSel::Any => Some(None),
        AddrSel::Range {
            family: Family::V4,
            lo,
            hi,
        } => Some(Some((
            u32::try_from(lo).unwrap_or(u32::MAX),
            u32::try_from(hi).unwrap_or(u32::MAX),
        ))),
        AddrSel::Range { .. } => None,
    };
    owners
        .outbound_entries()
        .filter_map(|(selector, owner)| {
            Some(SteerRule {
                src: v4(&selector.local)?,
                dst: v4(&selector.remote)?,
                proto: match selector.proto {
                    ProtoSel::Any => None,
                    ProtoSel::Is(p) => Some(p),
                },
                queue: owner.and_then(|o| u32::try_from(o).ok()),
            })
        })
        .collect()
}

pub(super) struct QueueThread {
    pub(super) index: usize,
    pub(super) host: RxThread,
    pub(super) network: RxThread,
    pub(super) worker: Worker,
    /// Frames gathered for each queue (this one's own included).
    pub(super) pending: Vec<Vec<PacketBuf>>,
    pub(super) pending_walks: Vec<Walks>,
    /// Turns without work since the last frame.
    pub(super) idle: u32,
    /// Which port an idle queue waits on next.
    pub(super) wait_on_network: bool,
    pub(super) closed: [bool; 2],
}

impl QueueThread {
    pub(super) fn run(&mut self) {
        let shared = Arc::clone(&self.worker.shared);
        let mut steer = [true, true];
        while !shared.stop.load(Ordering::SeqCst) {
            for (rx, steer) in [&mut self.host, &mut self.network]
                .into_iter()
                .zip(&mut steer)
            {
                if let Some(d) = rx.dispatch.as_mut() {
                    *steer |= d.refresh();
                }
            }
            if self.index == 0 && steer != [false, false] && !self.steer(steer) {
                return;
            }
            steer = [false, false];
            self.host.stall_if_asked();
            let mut work = 0;
            for side in [Side::Host, Side::Network] {
                let wait = self.wait_for(side);
                match self.take(side, wait) {
                    Some(n) => work += n,
                    None => return,
                }
            }
            while let Ok(batch) = self.worker.batches.try_recv() {
                work += batch.frames.len();
                self.worker
                    .gateway
                    .count_handed_over(batch.frames.len() as u64);
                self.worker.handle_batch(batch);
            }
            let now = shared.now();
            for rx in [&mut self.host, &mut self.network] {
                rx.publish_parse_counts();
                rx.expire_fragments();
                if now >= rx.next_drop_check {
                    rx.next_drop_check = now.saturating_add(KERNEL_DROP_CHECK);
                    rx.count_kernel_drops();
                }
            }
            beat(&self.host.heartbeat, now);
            self.worker.handle_controls();
            self.worker.tick();
            self.rest(work);
        }
        self.host.count_kernel_drops();
        self.network.count_kernel_drops();
        self.worker.handle_controls();
    }

    /// Tells the host port's group (`[host, network]`) which queue owns
    /// the SAs of each outbound SPD entry and the network port's which
    /// owns each inbound SPI (one queue does it for all, after each change
    /// of owners); false if a port failed, which stops the pipeline.
    fn steer(&mut self, which: [bool; 2]) -> bool {
        let mut result = Ok(());
        if let (true, Some(d)) = (which[0], self.host.dispatch.as_ref()) {
            result = self.host.port.steer_by_rules(&steer_rules(&d.owners));
        }
        if let (true, Some(d), Ok(())) = (which[1], self.network.dispatch.as_ref(), &result) {
            let owners: Vec<(u32, u32)> = d
                .owners
                .inbound_owners()
                .map(|(spi, owner)| (spi, u32::try_from(owner).unwrap_or(0)))
                .collect();
            result = self.network.port.steer_by_spi(&owners);
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.worker.shared.fail(Failure::Port(e.to_string()));
                false
            }
        }
    }

    /// How to wait on `side`'s port this turn: not at all while there is
    /// work; an idle queue waits on one port at a time.
    fn wait_for(&self, side: Side) -> Wait {
        let on_network = side == Side::Network;
        if self.idle >= IDLE_SPINS + IDLE_NAPS && self.wait_on_network == on_network {
            Wait::Within(IDLE_WAIT)
        } else {
            Wait::No
        }
    }

    /// After a turn that found `work` frames: spins, naps or (by
    /// [`QueueThread::wait_for`]) waits in the kernel, the longer idle
    /// the longer.
    fn rest(&mut self, work: usize) {
        if work > 0 {
            self.idle = 0;
            return;
        }
        self.idle = self.idle.saturating_add(1);
        if self.idle < IDLE_SPINS {
            std::hint::spin_loop();
        } else if self.idle < IDLE_SPINS + IDLE_NAPS {
            std::thread::sleep(IDLE_NAP);
        } else {
            self.wait_on_network = !self.wait_on_network;
        }
    }

    /// Takes a burst from `side`'s port and handles or hands over its
    /// frames; how many it took, or `None` once the pipeline failed.
    fn take(&mut self, side: Side, wait: Wait) -> Option<usize> {
        let slot = usize::from(side == Side::Network);
        if self.closed[slot] {
            if let Wait::Within(d) = wait {
                std::thread::sleep(d);
            }
            return Some(0);
        }
        let rx = match side {
            Side::Host => &mut self.host,
            Side::Network => &mut self.network,
        };
        let got = match rx.gather(wait, &mut self.pending, &mut self.pending_walks) {
            Gathered::Frames(n) => n,
            Gathered::Closed => {
                self.closed[slot] = true;
                0
            }
            Gathered::Failed => return None,
        };
        for (q, (frames, walks)) in self.pending.iter_mut().zip(&self.pending_walks).enumerate() {
            if frames.is_empty() {
                continue;
            }
            if q == self.index {
                self.worker.handle_frames(side, frames, walks);
                rx.free.append(frames);
            } else {
                rx.flush(q, frames, walks);
            }
        }
        Some(got)
    }
}

/// Starts the pipeline in queues mode: one thread per entry of `queues`,
/// each receiving on its own handles of both ports and running the whole
/// pipeline for what it receives (see the module documentation).
/// `make_stage`, `make_endpoint` and `configure` are as for
/// [`start_configured`]; there is no mobility stage.
pub fn start_queues(
    cfg: &QueueConfig,
    queues: Vec<QueuePorts>,
    make_stage: &dyn Fn() -> IpsecStage,
    make_endpoint: &EndpointMaker<'_>,
    configure: &dyn Fn(&mut Gateway),
    tap: Option<SharedTap>,
) -> Running {
    let n = queues.len().max(1);
    let shared = Shared::new();
    let depth = cfg.inbox_depth.max(1);
    let pools = Pools::new(n, depth, &shared.buffers_made);
    let mut stage = make_stage();
    stage.set_ownership(StageOwnership::Observer { workers: n });
    let published = Arc::new(PublishedOwners::new(stage.owner_map()));
    let observer = (Mutex::new(Gateway::new(stage)), Arc::clone(&published));
    let inboxes: Vec<_> = (0..n).map(|_| bounded::<Batch>(depth)).collect();
    let senders: Vec<Sender<Batch>> = inboxes.iter().map(|(tx, _)| tx.clone()).collect();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    let mut heartbeats = Vec::new();
    let mut rx_parse = Vec::new();
    for (index, (ports, (_, inbox))) in queues.into_iter().zip(inboxes).enumerate() {
        let host_link = ports.host.rx.link_type();
        let net_link = ports.network.rx.link_type();
        let tx = SharedTxPorts {
            host: Arc::new(Mutex::new(ports.host.tx)),
            network: Arc::new(Mutex::new(ports.network.tx)),
        };
        let ownership = StageOwnership::Worker {
            worker: index,
            workers: n,
        };
        let gateway = build_gateway(make_stage, ownership, make_endpoint, None, configure);
        let (ctx, crx) = bounded::<Control>(64);
        let name = format!("bitsgw-queue-{index}");
        let heartbeat = Heartbeat::new(&name, &shared);
        let env = WorkerEnv {
            pools: &pools,
            tx: &tx,
            host_link,
            net_link,
            tap: &tap,
            shared: &shared,
        };
        let worker = Worker::new(
            index,
            gateway,
            (inbox, crx),
            &env,
            Arc::clone(&heartbeat.last),
        );
        let mut receiver = |side: Side, port: Box<dyn RxPort>, link: LinkType| {
            let parse_out = Arc::new(RxParseCounts::default());
            rx_parse.push(Arc::clone(&parse_out));
            RxThread {
                parse: ParseCounts::default(),
                parse_out,
                heartbeat: Arc::clone(&heartbeat.last),
                side,
                link,
                port,
                dispatch: Some(Dispatch {
                    owners: published.read(),
                    version: 0,
                    published: Arc::clone(&published),
                    flows: FlowOwners::new(side),
                }),
                reassembler: Reassembler::new(bitsgw_frag::ReassemblyLimits::default()),
                frag_seen: [0; FragDrop::ALL.len()],
                scratch: PacketBuf::with_capacity(70_000, bitsgw_wire::buf::DEFAULT_HEADROOM),
                workers: senders.clone(),
                home: Some(index),
                inline: None,
                pool: pools.bufs_rx.clone(),
                vecs: pools.vecs_rx.clone(),
                spare: None,
                free: Vec::with_capacity(BATCH),
                next_drop_check: Timestamp::ZERO,
                shared: Arc::clone(&shared),
            }
        };
        let host = receiver(Side::Host, ports.host.rx, host_link);
        let network = receiver(Side::Network, ports.network.rx, net_link);
        let queue = QueueThread {
            index,
            host,
            network,
            worker,
            pending: (0..n).map(|_| Vec::with_capacity(BATCH)).collect(),
            pending_walks: vec![[None; BATCH]; n],
            idle: 0,
            wait_on_network: false,
            closed: [false; 2],
        };
        controls.push(ctx);
        threads.push(spawn_guarded(name, &shared, queue, QueueThread::run));
        heartbeats.push(heartbeat);
    }
    Running {
        shared,
        workers: controls.len(),
        controls,
        observer: Some(observer),
        threads,
        heartbeats,
        rx_parse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ipsec::config::parse_policy;
    use bitsgw_ipsec::selector::{proto, Addr, FlowKey, NextLayer};
    use bitsgw_ipsec::StageConfig;

    /// The steering rules send a flow to the queue the owner map names for
    /// it, for every protected flow of a policy with several SAs and a
    /// discard entry last.
    #[test]
    fn steering_rules_name_the_owner_map_s_owner() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../policies/site-to-site-a.json");
        let set = parse_policy(&std::fs::read_to_string(&path).unwrap(), "a.json").unwrap();
        for queues in 1..=3 {
            let mut stage = IpsecStage::new(StageConfig::default());
            set.apply(&mut stage, Timestamp::ZERO).unwrap();
            stage.set_ownership(StageOwnership::Observer { workers: queues });
            let owners = stage.owner_map();
            let rules = steer_rules(&owners);
            assert!(!rules.is_empty());
            for (src, dst) in [
                ("192.0.2.10", "198.51.100.20"),
                ("192.0.2.99", "198.51.100.7"),
                ("192.0.2.10", "8.8.8.8"),
            ] {
                let key = FlowKey {
                    local: Addr::from(src.parse::<std::net::IpAddr>().unwrap()),
                    remote: Addr::from(dst.parse::<std::net::IpAddr>().unwrap()),
                    proto: proto::UDP,
                    next: NextLayer::Ports {
                        local: 1000,
                        remote: 2000,
                    },
                };
                let (s, d) = (key.local.bits as u32, key.remote.bits as u32);
                let first = rules.iter().find(|r| {
                    r.src.is_none_or(|(lo, hi)| (lo..=hi).contains(&s))
                        && r.dst.is_none_or(|(lo, hi)| (lo..=hi).contains(&d))
                        && r.proto.is_none_or(|p| p == proto::UDP)
                });
                let steered = first.and_then(|r| r.queue).map(|q| q as usize);
                assert_eq!(steered, owners.outbound_owner(&key), "{src} -> {dst}");
            }
        }
    }

    /// A frame of an SA goes to the SA's owner wherever it arrived; a frame
    /// of no SA stays where it arrived.
    #[test]
    fn frames_go_to_their_owner_or_stay() {
        for queues in 1..=4 {
            for arrived in 0..queues {
                assert_eq!(queue_for(None, arrived, queues), arrived);
                for owner in 0..queues {
                    assert_eq!(queue_for(Some(owner), arrived, queues), owner);
                }
            }
        }
    }
}
