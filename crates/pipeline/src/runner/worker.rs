//! The workers: each owns a gateway (and, through its stage, its share
//! of the SAs), handles the batches the receive threads hand it, applies
//! controls and runs timers between batches.

use super::*;

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) gateway: Gateway,
    pub(super) batches: Receiver<Batch>,
    pub(super) control: Receiver<Control>,
    pub(super) pool: Sender<PacketBuf>,
    pub(super) vecs: Sender<Vec<PacketBuf>>,
    pub(super) tx: TxPorts,
    pub(super) host_link: LinkType,
    pub(super) net_link: LinkType,
    pub(super) tap: Option<SharedTap>,
    pub(super) shared: Arc<Shared>,
    pub(super) events: Vec<Event>,
    pub(super) heartbeat: Arc<AtomicU64>,
}

/// What every worker of a runner shares: its pools, the ports it takes
/// its sending handles on, their link types, the tap and the runner's
/// state.
pub(super) struct WorkerEnv<'a> {
    pub(super) pools: &'a Pools,
    pub(super) tx: &'a SharedTxPorts,
    pub(super) host_link: LinkType,
    pub(super) net_link: LinkType,
    pub(super) tap: &'a Option<SharedTap>,
    pub(super) shared: &'a Arc<Shared>,
}

impl Worker {
    /// Worker `index` with `gateway`, taking batches from `batches` and
    /// controls from `control`, beating `heartbeat`.
    pub(super) fn new(
        index: usize,
        gateway: Gateway,
        (batches, control): (Receiver<Batch>, Receiver<Control>),
        env: &WorkerEnv<'_>,
        heartbeat: Arc<AtomicU64>,
    ) -> Self {
        Worker {
            index,
            gateway,
            batches,
            control,
            pool: env.pools.bufs_tx.clone(),
            vecs: env.pools.vecs_tx.clone(),
            tx: TxPorts::for_thread(env.tx),
            host_link: env.host_link,
            net_link: env.net_link,
            tap: env.tap.clone(),
            shared: Arc::clone(env.shared),
            events: Vec::new(),
            heartbeat,
        }
    }

    pub(super) fn run(&mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.handle_controls();
            match self.batches.recv_timeout(Duration::from_millis(10)) {
                Ok(batch) => self.handle_batch(batch),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
        }
        self.handle_controls();
    }

    pub(super) fn handle_controls(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            self.handle_control(c);
        }
    }

    /// What a worker does between batches: timers, the endpoints and the
    /// mobility stage's own packets, events.
    pub(super) fn tick(&mut self) {
        let now = self.shared.now();
        // Before the timers: they may send (a Binding Update), and an SA
        // installed since the last loop needs its lease first.
        self.serve_leases(now);
        beat(&self.heartbeat, now);
        if self.gateway.poll_timeout().is_some_and(|t| t <= now) {
            self.gateway.handle_timeout(now);
        }
        self.poll_endpoints(now);
        self.collect_events();
    }

    /// Answers the sequence-lease requests of the outbound SAs this worker
    /// owns, the only ones its stage raises (one flag checked when there
    /// are none).
    pub(super) fn serve_leases(&mut self, now: Timestamp) {
        self.gateway.serve_leases(now);
    }

    /// Takes the stage's events: only the owner of an SA raises its events.
    pub(super) fn collect_events(&mut self) {
        while let Some(e) = self.gateway.poll_event() {
            self.events.push(e);
        }
    }

    pub(super) fn handle_control(&mut self, c: Control) {
        match c {
            Control::Apply(action) => action(&mut self.gateway),
            Control::Report(reply) => {
                self.collect_events();
                let stage = self.gateway.stage();
                let sas = stage
                    .sad()
                    .iter()
                    .filter(|(_, sa)| sa.is_owned())
                    .map(|(_, sa)| {
                        let due = |limits: &bitsgw_ipsec::sa::Limits| {
                            limits
                                .seconds
                                .map(|s| sa.installed_at().saturating_add(Duration::from_secs(s)))
                        };
                        SaReport {
                            name: sa.name().to_string(),
                            spi: sa.spi(),
                            direction: sa.params().direction,
                            mode: sa.params().mode,
                            transform: sa.params().transform,
                            backend: sa.backend(),
                            backend_setting: sa.params().backend,
                            state: sa.state(),
                            stats: *sa.stats(),
                            seq: sa.seq(),
                            soft_expiry: due(&sa.params().soft),
                            hard_expiry: due(&sa.params().hard),
                        }
                    })
                    .collect();
                let report = Report {
                    sas,
                    stage: stage.counters().clone(),
                    pipeline: self.gateway.counters().clone(),
                    spd_hits_out: stage.spd(Direction::Outbound).hits().to_vec(),
                    spd_hits_in: stage.spd(Direction::Inbound).hits().to_vec(),
                    events: std::mem::take(&mut self.events),
                    mobility: self.gateway.mobility().map(|m| m.counters().clone()),
                    // The pipeline's own count and clock, added by
                    // `Running::report`.
                    packet_buffers: 0,
                    now: Timestamp::ZERO,
                    parse: stage.parse_counts(),
                    by_worker: Vec::new(),
                };
                let _ = reply.send((self.index, report));
            }
        }
    }

    pub(super) fn poll_endpoints(&mut self, now: Timestamp) {
        if !self.gateway.has_endpoint(Side::Host)
            && !self.gateway.has_endpoint(Side::Network)
            && self.gateway.mobility().is_none()
            && self.gateway.routed().is_none()
        {
            return;
        }
        let tx = &mut self.tx;
        let mut failed = 0u64;
        let mut emit = |side: Side, frame: &[u8]| {
            if !tx.send(side, frame) {
                failed += 1;
            }
        };
        match self.tap.as_ref().and_then(|t| t.lock().ok()).as_deref_mut() {
            Some(t) => self.gateway.poll_endpoints(now, &mut emit, t),
            None => self.gateway.poll_endpoints(now, &mut emit, &mut NoTap),
        }
        failed += self.tx.flush();
        self.gateway.count_drops(PipelineDrop::SendFailed, failed);
    }

    /// Handles a batch a receive thread handed over, then returns its
    /// buffers and vector to the pools.
    pub(super) fn handle_batch(&mut self, batch: Batch) {
        let mut frames = batch.frames;
        self.handle_frames(batch.side, &mut frames, &batch.walks);
        for buf in frames.drain(..) {
            let _ = self.pool.try_send(buf);
        }
        let _ = self.vecs.try_send(frames);
    }

    /// Handles frames received on `side`, in place; the buffers stay the
    /// caller's to reuse.
    pub(super) fn handle_frames(&mut self, side: Side, frames: &mut [PacketBuf], walks: &Walks) {
        // Fail closed: once the pipeline is stopping (a worker died, a port
        // failed), nothing more is forwarded.
        if self.shared.stop.load(Ordering::SeqCst) {
            self.gateway
                .count_drops(PipelineDrop::WorkerDown, frames.len() as u64);
            return;
        }
        let link = match side {
            Side::Host => self.host_link,
            Side::Network => self.net_link,
        };
        let now = self.shared.now();
        self.serve_leases(now);
        let tx = &mut self.tx;
        let mut failed = 0u64;
        let mut emit = |side: Side, frame: &[u8]| {
            if !tx.send(side, frame) {
                failed += 1;
            }
        };
        let mut tap_guard = self.tap.as_ref().and_then(|t| t.lock().ok());
        match tap_guard.as_deref_mut() {
            // Untraced, the batch goes through the stage as one burst.
            None => self
                .gateway
                .handle_frames_walked(side, link, frames, walks, now, &mut emit),
            Some(t) => {
                for (i, buf) in frames.iter_mut().enumerate() {
                    let walk = walks.get(i).and_then(Option::as_ref);
                    let _ = self
                        .gateway
                        .handle_frame_walked(side, link, buf, walk, now, &mut emit, t);
                }
            }
        }
        drop(tap_guard);
        failed += self.tx.flush();
        self.gateway.count_drops(PipelineDrop::SendFailed, failed);
    }
}
