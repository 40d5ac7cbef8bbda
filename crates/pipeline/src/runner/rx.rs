//! The receive threads: frames in, reassembled (network side), walked
//! once and handed to the worker that owns their SA, by the owner map the
//! controls publish.

use super::*;

/// Receive thread: frames in, dispatched by SA.
pub(super) struct RxThread {
    /// Walks and classifications made, published to `parse_out` per burst.
    pub(super) parse: ParseCounts,
    pub(super) parse_out: Arc<RxParseCounts>,
    pub(super) side: Side,
    pub(super) link: LinkType,
    pub(super) port: Box<dyn RxPort>,
    /// Workers mode: what frames are dispatched by (none running to
    /// completion, where this thread's own gateway takes every frame).
    pub(super) dispatch: Option<Dispatch>,
    pub(super) reassembler: Reassembler,
    /// Fragment drops of `reassembler` already counted.
    pub(super) frag_seen: [u64; FragDrop::ALL.len()],
    pub(super) scratch: PacketBuf,
    pub(super) workers: Vec<Sender<Batch>>,
    /// Queues mode: this thread's queue, which keeps the frames no SA owns
    /// (see [`super::queue`]).
    pub(super) home: Option<usize>,
    /// Run to completion: the gateway this thread handles its frames with
    /// (instead of handing them to `workers`).
    pub(super) inline: Option<Worker>,
    pub(super) pool: Receiver<PacketBuf>,
    /// Batch vectors the workers have emptied.
    pub(super) vecs: Receiver<Vec<PacketBuf>>,
    /// A buffer taken for a frame that did not come, kept for the next.
    pub(super) spare: Option<PacketBuf>,
    /// Run to completion: the buffers of frames this thread has handled,
    /// reused without passing through a channel.
    pub(super) free: Vec<PacketBuf>,
    /// When the port's kernel drops are next read.
    pub(super) next_drop_check: Timestamp,
    pub(super) shared: Arc<Shared>,
    pub(super) heartbeat: Arc<AtomicU64>,
}

/// How often a receive thread reads its port's kernel drop count.
pub(super) const KERNEL_DROP_CHECK: Duration = Duration::from_millis(100);

/// What a receive thread dispatches by: the owner map last published,
/// taken anew (one atomic load per burst, a lock only when it changed).
pub(super) struct Dispatch {
    pub(super) owners: Arc<OwnerMap>,
    /// The publication `owners` is.
    pub(super) version: u64,
    pub(super) published: Arc<PublishedOwners>,
    pub(super) flows: FlowOwners,
}

impl Dispatch {
    /// Takes the owner map published since the last call, if any; whether
    /// there was one.
    pub(super) fn refresh(&mut self) -> bool {
        let version = self.published.version.load(Ordering::Acquire);
        if version == self.version {
            return false;
        }
        self.owners = self.published.read();
        self.version = version;
        true
    }
}

/// The owner map the receive threads read, replaced whole after each
/// control.
pub(super) struct PublishedOwners {
    /// Bumped after each publication.
    pub(super) version: AtomicU64,
    pub(super) map: Mutex<Arc<OwnerMap>>,
}

impl PublishedOwners {
    pub(super) fn new(map: OwnerMap) -> Self {
        PublishedOwners {
            version: AtomicU64::new(0),
            map: Mutex::new(Arc::new(map)),
        }
    }

    pub(super) fn publish(&self, map: OwnerMap) {
        if let Ok(mut m) = self.map.lock() {
            *m = Arc::new(map);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(super) fn read(&self) -> Arc<OwnerMap> {
        match self.map.lock() {
            Ok(m) => Arc::clone(&m),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// How [`RxThread::gather`] waits for the first frame of a burst.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wait {
    /// As the port's [`RxPort::recv`] does.
    Port,
    /// At most about this long.
    Within(Duration),
    /// Not at all.
    No,
}

/// What [`RxThread::gather`] found.
pub(super) enum Gathered {
    /// This many frames (held fragments included).
    Frames(usize),
    /// The port closed: nothing more will come.
    Closed,
    /// The port failed; the pipeline is stopping.
    Failed,
}

pub(super) enum Pick {
    /// To this worker, with what the walk found.
    Worker(usize, Option<FrameWalk>),
    Held,
}

/// Which worker owns the SAs of each recent outbound flow, as the owner
/// map last answered (an SPD lookup, too dear to ask per packet of a large
/// SPD). The answers hold for one generation of the map: the cache is
/// emptied when it moves on (an SPD reloaded, an SA installed, replaced or
/// removed), so a hit is always what the map would answer now. See
/// [`bitsgw_ipsec::flow_cache`].
pub(super) struct FlowOwners {
    pub(super) generation: u64,
    pub(super) cache: FlowCache<Option<usize>>,
}

impl FlowOwners {
    /// The network side dispatches by SPI and never asks.
    pub(super) fn new(side: Side) -> Self {
        let cache = match side {
            Side::Host => FlowCache::default(),
            Side::Network => FlowCache::minimal(),
        };
        FlowOwners {
            generation: 0,
            cache,
        }
    }

    /// The SPD entry `key` sent now matches first (see
    /// [`OwnerMap::classify`]).
    pub(super) fn decide(&mut self, owners: &OwnerMap, key: &FlowKey) -> SpdDecision {
        let generation = owners.generation();
        if generation != self.generation {
            self.cache.clear();
            self.generation = generation;
        }
        let entry = self
            .cache
            .get_or_insert_with(key, |k| owners.classify(k).entry);
        SpdDecision {
            spd: owners.spd_fingerprint(),
            entry,
        }
    }

    /// The worker that owns the SAs that would protect `key` sent now, if
    /// any.
    #[cfg(test)]
    pub(super) fn owner(&mut self, owners: &OwnerMap, key: &FlowKey) -> Option<usize> {
        let decision = self.decide(owners, key);
        owners.decision_owner(&decision)
    }
}

impl RxThread {
    pub(super) fn run(&mut self) {
        let n = if self.inline.is_some() {
            1
        } else {
            self.workers.len()
        };
        let mut pending: Vec<Vec<PacketBuf>> = (0..n).map(|_| Vec::with_capacity(BATCH)).collect();
        let mut pending_walks: Vec<Walks> = vec![[None; BATCH]; n];
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Some(d) = self.dispatch.as_mut() {
                d.refresh();
            }
            self.stall_if_asked();
            match self.gather(Wait::Port, &mut pending, &mut pending_walks) {
                Gathered::Frames(_) => {}
                Gathered::Closed => {
                    self.flush_all(&mut pending, &pending_walks);
                    self.count_kernel_drops();
                    self.serve_until_stopped();
                    return;
                }
                Gathered::Failed => return,
            }
            self.flush_all(&mut pending, &pending_walks);
            self.publish_parse_counts();
            self.expire_fragments();
            let now = self.shared.now();
            beat(&self.heartbeat, now);
            if now >= self.next_drop_check {
                self.next_drop_check = now.saturating_add(KERNEL_DROP_CHECK);
                self.count_kernel_drops();
            }
            if let Some(worker) = self.inline.as_mut() {
                worker.handle_controls();
                worker.tick();
            }
        }
        self.count_kernel_drops();
        if let Some(worker) = self.inline.as_mut() {
            worker.handle_controls();
        }
    }

    /// One frame, waiting as `wait` says; then whatever else is already
    /// there, up to a batch, each put in `pending` for the worker
    /// [`RxThread::pick`] chose (with its walk in `walks`). The frames of
    /// one burst share the time it was taken at.
    pub(super) fn gather(
        &mut self,
        wait: Wait,
        pending: &mut [Vec<PacketBuf>],
        walks: &mut [Walks],
    ) -> Gathered {
        let mut burst_time = None;
        let mut got = 0;
        for i in 0..BATCH {
            let mut buf = self.take_buf();
            let received = match (i, wait) {
                (0, Wait::Port) => self.port.recv(&mut buf),
                (0, Wait::Within(wait)) => self.port.recv_within(&mut buf, wait),
                _ => self.port.recv_nowait(&mut buf),
            };
            match received {
                Ok(true) => {
                    got += 1;
                    let now = *burst_time.get_or_insert_with(|| self.shared.now());
                    match self.pick(&mut buf, now) {
                        Pick::Worker(w, walk) => {
                            if let Some(slot) = walks[w].get_mut(pending[w].len()) {
                                *slot = walk;
                            }
                            pending[w].push(buf);
                        }
                        Pick::Held => self.spare = Some(buf),
                    }
                }
                Ok(false) => {
                    self.spare = Some(buf);
                    break;
                }
                Err(PortError::FrameTooLarge { .. }) => {
                    self.spare = Some(buf);
                    if let Ok(mut p) = self.shared.rx_pipeline.lock() {
                        p.record(PipelineDrop::BadFrame);
                    }
                }
                Err(PortError::Closed { .. }) => {
                    self.spare = Some(buf);
                    return Gathered::Closed;
                }
                Err(e) => {
                    self.spare = Some(buf);
                    self.shared.fail(Failure::Port(e.to_string()));
                    return Gathered::Failed;
                }
            }
        }
        Gathered::Frames(got)
    }

    /// A buffer for the next frame: the one kept from the last try, one
    /// this thread freed, one from the pool, or (once) a new one.
    pub(super) fn take_buf(&mut self) -> PacketBuf {
        match self.spare.take().or_else(|| self.free.pop()) {
            Some(b) => b,
            None => self.pool.try_recv().unwrap_or_else(|_| {
                self.shared.buffers_made.fetch_add(1, Ordering::Relaxed);
                PacketBuf::new()
            }),
        }
    }

    /// Run to completion, after the port closed: the gateway still answers
    /// reports and runs its timers, as a worker does, until the pipeline
    /// stops.
    pub(super) fn serve_until_stopped(&mut self) {
        let Some(worker) = self.inline.as_mut() else {
            return;
        };
        while !self.shared.stop.load(Ordering::SeqCst) {
            worker.handle_controls();
            worker.tick();
            beat(&self.heartbeat, self.shared.now());
            std::thread::sleep(Duration::from_millis(10));
        }
        worker.handle_controls();
    }

    /// Counts the frames the operating system dropped before the port got
    /// them (a full socket buffer), so they are not lost silently.
    pub(super) fn count_kernel_drops(&mut self) {
        match self.port.take_kernel_drops() {
            Ok(0) => {}
            Ok(n) => {
                if let Ok(mut p) = self.shared.rx_pipeline.lock() {
                    p.record_n(PipelineDrop::KernelRx, n);
                }
            }
            // The next receive reports a broken port.
            Err(_) => {}
        }
    }

    /// Discards datagrams whose reassembly time ran out, counted.
    pub(super) fn expire_fragments(&mut self) {
        if self.reassembler.in_progress() == 0 {
            return;
        }
        let now = self.shared.now();
        if self.reassembler.poll_timeout().is_some_and(|t| t <= now) {
            self.reassembler.handle_timeout(now);
            self.count_frag_drops();
        }
    }

    /// Counts every fragment the reassembler dropped since last asked
    /// (held ones discarded with an overlapping one included).
    pub(super) fn count_frag_drops(&mut self) {
        if let Ok(mut s) = self.shared.rx_stage.lock() {
            s.record_frag_drops(&self.reassembler, &mut self.frag_seen);
        }
    }

    /// Blocks this thread if [`Running::stall`] asked for it by name.
    pub(super) fn stall_if_asked(&self) {
        if !self.shared.stall_asked.load(Ordering::Relaxed) {
            return;
        }
        let me = std::thread::current();
        let length = self.shared.stall.lock().ok().and_then(|mut s| {
            let mine = s
                .as_ref()
                .is_some_and(|(t, _)| me.name() == Some(t.as_str()));
            if mine {
                self.shared.stall_asked.store(false, Ordering::Relaxed);
                s.take().map(|(_, length)| length)
            } else {
                None
            }
        });
        if let Some(length) = length {
            std::thread::sleep(length);
        }
    }

    /// Makes this thread's walks and classifications so far readable by
    /// reports.
    pub(super) fn publish_parse_counts(&self) {
        let out = &self.parse_out;
        out.ip_walks.store(self.parse.ip_walks, Ordering::Relaxed);
        out.spd_classifications
            .store(self.parse.spd_classifications, Ordering::Relaxed);
    }

    pub(super) fn flush_all(&mut self, pending: &mut [Vec<PacketBuf>], walks: &[Walks]) {
        for (w, (p, walks)) in pending.iter_mut().zip(walks).enumerate() {
            if !p.is_empty() {
                self.flush(w, p, walks);
            }
        }
    }

    pub(super) fn flush(&mut self, w: usize, frames: &mut Vec<PacketBuf>, walks: &Walks) {
        if let Some(worker) = self.inline.as_mut() {
            worker.handle_frames(self.side, frames, walks);
            self.free.append(frames);
            return;
        }
        let count = frames.len() as u64;
        let empty = self
            .vecs
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let batch = Batch {
            side: self.side,
            frames: std::mem::replace(frames, empty),
            walks: *walks,
        };
        match self.workers[w].try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if let Ok(mut p) = self.shared.rx_pipeline.lock() {
                    p.record_n(PipelineDrop::QueueFull, count);
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                if let Ok(mut p) = self.shared.rx_pipeline.lock() {
                    p.record_n(PipelineDrop::WorkerDown, count);
                }
            }
        }
    }

    /// Which worker owns this frame's SA.
    pub(super) fn pick(&mut self, buf: &mut PacketBuf, now: Timestamp) -> Pick {
        if self.inline.is_some() && self.side == Side::Host {
            // Run to completion: this thread's own gateway takes every
            // frame; only the network side reassembles first.
            return Pick::Worker(0, None);
        }
        let n = self.workers.len();
        let (layer2, l2) = match self.link {
            // Behind its VLAN tags, if any.
            LinkType::Ethernet => match ether::Layer2::parse(buf.data()) {
                Some(l2) if l2.is_ip() => (Some(l2), l2.header_len),
                _ => return Pick::Worker(self.home.unwrap_or(0), None),
            },
            LinkType::RawIp => (None, 0),
        };
        self.parse.ip_walks += 1;
        let Ok(meta) = ip::parse(&buf.data()[l2..]) else {
            return Pick::Worker(self.home.unwrap_or(0), None);
        };
        if self.side == Side::Network && meta.frag.is_some() {
            let done =
                self.reassembler
                    .handle_fragment(&buf.data()[l2..], &meta, now, &mut self.scratch);
            self.count_frag_drops();
            match done {
                Ok(Reassembly::Held) => {
                    if let Ok(mut s) = self.shared.rx_stage.lock() {
                        s.fragments_held += 1;
                    }
                    return Pick::Held;
                }
                Ok(Reassembly::Complete) => {
                    let mut header = [0u8; ether::MAX_HEADER_LEN];
                    header[..l2].copy_from_slice(&buf.data()[..l2]);
                    let whole = self.scratch.data();
                    if buf.set(whole).is_err() {
                        *buf = PacketBuf::from_slice(whole);
                    }
                    if l2 != 0 {
                        if let Ok(h) = buf.prepend(l2) {
                            h.copy_from_slice(&header[..l2]);
                        }
                    }
                    if let Ok(mut s) = self.shared.rx_stage.lock() {
                        s.reassembled += 1;
                    }
                    return self.pick(buf, now);
                }
                // Counted above, with the held fragments it took along.
                Err(_) => return Pick::Held,
            }
        }
        let mut walk = FrameWalk {
            layer2,
            ip: Walked { meta, spd: None },
        };
        let Some(Dispatch { owners, flows, .. }) = self.dispatch.as_mut() else {
            // Run to completion: this thread's own gateway takes it.
            return Pick::Worker(0, Some(walk));
        };
        let pkt = &buf.data()[l2..];
        let owner = match self.side {
            Side::Host => {
                self.parse.spd_classifications += 1;
                let key = flow_key(pkt, &meta, Direction::Outbound);
                let decision = flows.decide(owners, &key);
                walk.ip.spd = Some(decision);
                owners.decision_owner(&decision)
            }
            Side::Network => esp_spi(pkt, &meta, owners.udp_encap_ports())
                .and_then(|spi| owners.inbound_owner(spi)),
        };
        // Traffic of no SA (bypass, discard) keeps its order per address
        // pair: a queue keeps what the kernel's flow hash gave it, workers
        // share it by the addresses' hash.
        if let Some(home) = self.home {
            return Pick::Worker(super::queue::queue_for(owner, home, n), Some(walk));
        }
        let key = owner.unwrap_or_else(|| {
            let (s, d) = (meta.src_range(), meta.dst_range());
            pkt.get(s)
                .into_iter()
                .chain(pkt.get(d))
                .flatten()
                .fold(0usize, |h, b| {
                    h.wrapping_mul(31).wrapping_add(usize::from(*b))
                })
        });
        Pick::Worker(key % n, Some(walk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ipsec::config::parse_policy;
    use bitsgw_ipsec::selector::{proto, Addr, NextLayer, Selector};
    use bitsgw_ipsec::spd::{Action, SpdEntry};
    use bitsgw_ipsec::IpsecStage;
    use bitsgw_ipsec::StageConfig;
    use std::net::IpAddr;

    fn addr(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    fn udp(local: &str, remote: &str) -> FlowKey {
        FlowKey {
            local: addr(local),
            remote: addr(remote),
            proto: proto::UDP,
            next: NextLayer::Ports {
                local: 1000,
                remote: 2000,
            },
        }
    }

    /// The receive thread's cached owners are the owner map's answers, also
    /// after the SAD or the SPD changed under flows it had cached; a
    /// replaced SA keeps its owner.
    #[test]
    fn flow_owners_follow_the_query_generation() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../policies/site-to-site-a.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let set = parse_policy(&text, "site-to-site-a.json").unwrap();
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage.set_ownership(StageOwnership::Observer { workers: 3 });
        let protected = udp("192.0.2.10", "198.51.100.20");
        let discarded = udp("192.0.2.10", "8.8.8.8");
        let asked = |stage: &IpsecStage, key: &FlowKey| stage.owner_map().outbound_owner(key);
        let mut owners = FlowOwners::new(Side::Host);
        let first = asked(&stage, &protected);
        assert!(first.is_some());
        for _ in 0..3 {
            assert_eq!(owners.owner(&stage.owner_map(), &protected), first);
            assert_eq!(owners.owner(&stage.owner_map(), &discarded), None);
        }
        // The SA goes and comes back in another slot, with the same owner.
        let id = stage.sad().by_name("a-to-b-v4").unwrap();
        stage.remove_sa(id);
        set.reload(&mut stage, Timestamp::ZERO).unwrap();
        assert_eq!(owners.owner(&stage.owner_map(), &protected), first);
        // The SPD changes to BYPASS everything.
        let all = |action| {
            vec![SpdEntry {
                name: "all".into(),
                selector: Selector::ANY,
                action,
            }]
        };
        stage.set_spd(all(Action::Bypass), all(Action::Bypass));
        assert_eq!(owners.owner(&stage.owner_map(), &protected), None);
        assert_eq!(owners.owner(&stage.owner_map(), &discarded), None);
    }
}
