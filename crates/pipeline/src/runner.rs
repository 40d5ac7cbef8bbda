//! The threaded pipeline: one receive thread per port hands frames, in
//! batches over crossbeam channels, to N workers; each worker owns a
//! [`Gateway`] and sends what it produces on the ports.
//!
//! One SA, one owner ([`bitsgw_ipsec::ownership`]): every worker's stage
//! has the same SPD and SAD, but only the SA's owner holds its keys, its
//! sequence counter and its replay window; the owner follows the SA's
//! name, so it stays the same across replacements. A receive thread hands
//! a frame to the worker that owns the SA it will use (outbound: the
//! bundle the SPD picks for its flow; inbound: the SA of its SPI), read
//! from an [`OwnerMap`] that [`Running::apply`] publishes after each
//! control, so sequence numbers leave in order; a frame that reaches
//! another worker anyway is dropped as `not_owner`. Inbound fragments are
//! reassembled by the receive thread before the SA is known.
//!
//! The appliance's own endpoints: every worker's gateway gets its own
//! [`LocalEndpoint`] per side from [`start_with_endpoints`]'s maker. Frames
//! for the appliance reach whichever worker their flow hashes to, so the
//! instances should share one host stack (`bitsgw-io`'s
//! `SmoltcpEndpoint` clones do): then a neighbor learnt by one worker is
//! known to all. Each worker also polls its endpoints every loop, which
//! sends what the shared stack queued for any of them.
//!
//! The mobility stage (`ha` and `mn` roles): [`start_with_mobility`] gives
//! a worker's gateway the stage its maker returns. Its binding state lives
//! in that one gateway, so those roles run with a single worker (the
//! appliance refuses more). Each worker sends what the stage originates
//! (Binding Updates and their retransmissions, Binding Acknowledgements)
//! on every loop, as it does for the endpoints.
//!
//! Run to completion ([`RunnerConfig::run_to_completion`]): there are no
//! workers; each port's receive thread owns a gateway and handles the
//! frames it receives itself, so a frame never changes threads. The host
//! port's thread sends with the outbound SAs and the network port's
//! receives with the inbound ones, so each SA still has one owner (SA
//! reports and lifetime events come from it alone). Each thread applies
//! controls and runs its gateway's timers between batches.
//!
//! Fail closed: a full worker queue drops the frame (counted), a worker
//! that dies stops forwarding altogether, and the runner reports why.

use crate::counters::{PipelineCounters, PipelineDrop};
use crate::endpoint::LocalEndpoint;
use crate::gateway::{FrameWalk, Gateway, Mobility, NoTap, Side, Tap};
use crate::port::{Port, PortError, RxPort, TxPort};
use bitsgw_ipsec::counters::StageCounters;
use bitsgw_ipsec::flow::flow_key;
use bitsgw_ipsec::flow_cache::FlowCache;
use bitsgw_ipsec::frag::{FragDrop, Reassembler, Reassembly};
use bitsgw_ipsec::ownership::{OwnerMap, StageOwnership};
use bitsgw_ipsec::sa::{Direction, SaState, SaStats};
use bitsgw_ipsec::selector::FlowKey;
use bitsgw_ipsec::walked::{ParseCounts, SpdDecision, Walked};
use bitsgw_ipsec::{DropReason, Event, IpsecStage};
use bitsgw_mobility::counters::MobilityCounters;
use bitsgw_wire::esp::esp_spi;
use bitsgw_wire::ether::{self, LinkType};
use bitsgw_wire::{ip, PacketBuf, Timestamp};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames handed to a worker at once, at most.
const BATCH: usize = 32;

/// Batch vectors made when the runner starts, at most.
const PREFILL_VECS: usize = 4096;
/// Packet buffers made when the runner starts, per worker and at most.
const PREFILL_BUFS_PER_WORKER: usize = 8 * BATCH;
const PREFILL_BUFS: usize = 1024;

/// How the runner is set up.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Worker threads.
    pub workers: usize,
    /// Batches a worker's queue holds.
    pub queue_depth: usize,
    /// Run to completion: each port's receive thread runs a gateway of its
    /// own and handles its frames itself, with no hand-over to a worker
    /// (`workers` is then not used). The host port's thread owns the
    /// outbound SAs, the network port's the inbound ones. Not for the
    /// mobility roles, whose binding state must live in one gateway.
    pub run_to_completion: bool,
}

/// A shared trace tap.
pub type SharedTap = Arc<Mutex<dyn Tap + Send>>;

/// One SA as a worker reports it.
#[derive(Debug, Clone)]
pub struct SaReport {
    /// Name.
    pub name: String,
    /// SPI.
    pub spi: u32,
    /// Direction.
    pub direction: Direction,
    /// State.
    pub state: SaState,
    /// Statistics.
    pub stats: SaStats,
    /// Sequence number (sent or highest received).
    pub seq: u64,
    /// When its soft and its hard time limit fall due, if it has one
    /// (RFC 4301 4.4.2.1).
    pub soft_expiry: Option<Timestamp>,
    /// See `soft_expiry`.
    pub hard_expiry: Option<Timestamp>,
}

/// What the whole pipeline has counted, and its IPsec events.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// SAs, each from its owning worker.
    pub sas: Vec<SaReport>,
    /// IPsec stage counters, summed over workers and receive threads.
    pub stage: StageCounters,
    /// Pipeline counters, summed.
    pub pipeline: PipelineCounters,
    /// Hits per outbound SPD entry.
    pub spd_hits_out: Vec<u64>,
    /// Hits per inbound SPD entry.
    pub spd_hits_in: Vec<u64>,
    /// The pipeline's clock when the report was made (what SA expiry
    /// times count from).
    pub now: Timestamp,
    /// IPsec events since the last report.
    pub events: Vec<Event>,
    /// The mobility stage's counters, summed, in the `ha` and `mn` roles.
    pub mobility: Option<MobilityCounters>,
    /// Packet buffers made since the start ([`PacketBuf::new`], 9.6 KB
    /// each). They are never freed while the pipeline runs but circulate,
    /// so this is the most frames ever in flight at once: it grows only
    /// when a burst outdoes every earlier one, and never past the bound the
    /// queue depths set (the pools' capacity). Memory that grows by more than
    /// this explains is a leak.
    pub packet_buffers: u64,
    /// IP walks and SPD classifications, by the receive threads and the
    /// workers' stages together: one of each per packet on the fast path
    /// (see [`bitsgw_ipsec::walked`]).
    pub parse: ParseCounts,
}

impl Report {
    fn merge_counters(&mut self, s: &StageCounters) {
        for r in DropReason::ALL {
            self.stage.add_drops(*r, s.drops(*r));
        }
        self.stage.outbound_protected += s.outbound_protected;
        self.stage.outbound_bypassed += s.outbound_bypassed;
        self.stage.inbound_decrypted += s.inbound_decrypted;
        self.stage.inbound_bypassed += s.inbound_bypassed;
        self.stage.ike_passed += s.ike_passed;
        self.stage.fragments_held += s.fragments_held;
        self.stage.reassembled += s.reassembled;
        self.stage.fragments_sent += s.fragments_sent;
    }
}

/// A control action applied by every worker to its gateway, in order (an
/// SA removed, policies replaced), and first to the keyless gateway whose
/// stage says who owns what.
pub type ControlAction = Arc<dyn Fn(&mut Gateway) + Send + Sync>;

enum Control {
    Report(Sender<(usize, Report)>),
    Apply(ControlAction),
}

struct Batch {
    side: Side,
    frames: Vec<PacketBuf>,
    /// What the receive thread found walking each frame, by position.
    walks: Walks,
}

/// The walks of a batch's frames, by position.
type Walks = [Option<FrameWalk>; BATCH];

/// Why the pipeline stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A worker thread died.
    WorkerDied(String),
    /// A port failed.
    Port(String),
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::WorkerDied(why) => write!(f, "a worker died, forwarding stopped: {why}"),
            Failure::Port(why) => write!(f, "a port failed, forwarding stopped: {why}"),
        }
    }
}

struct Shared {
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
    origin: Instant,
    /// Counters of the receive threads (fragment drops, full queues).
    rx_stage: Mutex<StageCounters>,
    rx_pipeline: Mutex<PipelineCounters>,
    /// Packet buffers made so far (see [`Report::packet_buffers`]).
    buffers_made: AtomicU64,
}

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn fail(&self, f: Failure) {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(f);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A running pipeline.
pub struct Running {
    shared: Arc<Shared>,
    controls: Vec<Sender<Control>>,
    /// Workers mode: a gateway whose stage owns no SA (it holds no keys),
    /// changed by every control before the workers, and the owner map
    /// made from it for the receive threads.
    observer: Option<(Mutex<Gateway>, Arc<PublishedOwners>)>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
    heartbeats: Vec<Heartbeat>,
    /// Each receive thread's walks and classifications so far.
    rx_parse: Vec<Arc<RxParseCounts>>,
}

/// A receive thread's [`ParseCounts`], stored once per burst.
#[derive(Debug, Default)]
struct RxParseCounts {
    ip_walks: AtomicU64,
    spd_classifications: AtomicU64,
}

/// When a forwarding thread last went round its loop (the pipeline's
/// clock, in nanoseconds): bumped once per turn, idle turns included, so
/// a thread that is stuck stops bumping it. One relaxed store per turn,
/// no lock.
#[derive(Debug, Clone)]
struct Heartbeat {
    thread: String,
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new(thread: &str, shared: &Shared) -> Self {
        Heartbeat {
            thread: thread.to_string(),
            last: Arc::new(AtomicU64::new(shared.now().0)),
        }
    }
}

/// Bumps a [`Heartbeat`] to `now`.
fn beat(last: &AtomicU64, now: Timestamp) {
    last.store(now.0, Ordering::Relaxed);
}

impl core::fmt::Debug for Running {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Running")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

/// Starts the pipeline. `make_stage` builds one IPsec stage per worker and
/// one per receive thread (all from the same policies, so SA ids agree).
pub fn start(
    cfg: &RunnerConfig,
    host: Port,
    network: Port,
    make_stage: &dyn Fn() -> IpsecStage,
    tap: Option<SharedTap>,
) -> Running {
    start_with_endpoints(cfg, host, network, make_stage, &|_| None, tap)
}

/// Makes a worker's mobility stage, or none (the `gateway` role).
pub type MobilityMaker<'a> = dyn Fn() -> Option<Mobility> + 'a;

/// Makes a worker's endpoint for one side, or none (no own addresses there).
pub type EndpointMaker<'a> = dyn Fn(Side) -> Option<Box<dyn LocalEndpoint>> + 'a;

/// [`start`], and the appliance's own endpoints: `make_endpoint` is called
/// for each side once per worker.
pub fn start_with_endpoints(
    cfg: &RunnerConfig,
    host: Port,
    network: Port,
    make_stage: &dyn Fn() -> IpsecStage,
    make_endpoint: &EndpointMaker<'_>,
    tap: Option<SharedTap>,
) -> Running {
    start_with_mobility(cfg, host, network, make_stage, make_endpoint, &|| None, tap)
}

/// [`start_with_endpoints`], and the mobility stage: `make_mobility` is
/// called once per worker (the roles that have one run a single worker:
/// the binding state is that worker's).
pub fn start_with_mobility(
    cfg: &RunnerConfig,
    host: Port,
    network: Port,
    make_stage: &dyn Fn() -> IpsecStage,
    make_endpoint: &EndpointMaker<'_>,
    make_mobility: &MobilityMaker<'_>,
    tap: Option<SharedTap>,
) -> Running {
    start_configured(
        cfg,
        host,
        network,
        make_stage,
        make_endpoint,
        make_mobility,
        &|_| {},
        tap,
    )
}

/// [`start_with_mobility`], and `configure` called on each worker's
/// gateway before it starts (routed mode: [`Gateway::set_routed`] with
/// clones of one [`crate::Routed`], so the workers share its neighbor
/// tables).
#[allow(clippy::too_many_arguments)] // each a separate part of the pipeline
pub fn start_configured(
    cfg: &RunnerConfig,
    host: Port,
    network: Port,
    make_stage: &dyn Fn() -> IpsecStage,
    make_endpoint: &EndpointMaker<'_>,
    make_mobility: &MobilityMaker<'_>,
    configure: &dyn Fn(&mut Gateway),
    tap: Option<SharedTap>,
) -> Running {
    let workers = cfg.workers.max(1);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
        origin: Instant::now(),
        rx_stage: Mutex::new(StageCounters::default()),
        rx_pipeline: Mutex::new(PipelineCounters::default()),
        buffers_made: AtomicU64::new(0),
    });
    let host_link = host.rx.link_type();
    let net_link = network.rx.link_type();
    let tx = SharedTxPorts {
        host: Arc::new(Mutex::new(host.tx)),
        network: Arc::new(Mutex::new(network.tx)),
    };
    let make_gateway = |ownership: StageOwnership| {
        let mut stage = make_stage();
        stage.set_ownership(ownership);
        let mut gateway = Gateway::new(stage);
        for side in [Side::Host, Side::Network] {
            if let Some(ep) = make_endpoint(side) {
                gateway.set_endpoint(side, ep);
            }
        }
        if let Some(m) = make_mobility() {
            gateway.set_mobility(m);
        }
        configure(&mut gateway);
        gateway
    };
    let make_worker = |index: usize, ownership: StageOwnership, pools: &Pools| {
        let (btx, brx) = bounded::<Batch>(cfg.queue_depth.max(1));
        let (ctx, crx) = bounded::<Control>(64);
        let worker = Worker {
            index,
            gateway: make_gateway(ownership),
            batches: brx,
            control: crx,
            pool: pools.bufs_tx.clone(),
            vecs: pools.vecs_tx.clone(),
            tx: TxPorts::for_thread(&tx),
            host_link,
            net_link,
            tap: tap.clone(),
            shared: Arc::clone(&shared),
            events: Vec::new(),
            heartbeat: Arc::new(AtomicU64::new(shared.now().0)),
        };
        (worker, btx, ctx)
    };
    let mut batch_txs = Vec::new();
    let mut controls = Vec::new();
    let mut threads = Vec::new();
    let mut heartbeats = Vec::new();
    let mut rx_parse = Vec::new();
    // Running to completion each receive thread recycles its own buffers;
    // with workers, the buffers circulate between all the threads.
    let mut rx_pools = Vec::new();
    // Workers mode: the stage the owner map is made from holds no keys and
    // forwards nothing, so it needs no endpoints or mobility stage.
    let observer = (!cfg.run_to_completion).then(|| {
        let mut stage = make_stage();
        stage.set_ownership(StageOwnership::Observer { workers });
        let published = Arc::new(PublishedOwners::new(stage.owner_map()));
        (Mutex::new(Gateway::new(stage)), published)
    });
    let mut inline_workers = [None, None];
    if cfg.run_to_completion {
        for (slot, (i, direction)) in inline_workers
            .iter_mut()
            .zip([(0, Direction::Outbound), (1, Direction::Inbound)])
        {
            let pools = Pools::new(1, cfg.queue_depth, &shared.buffers_made);
            let (worker, _, ctx) = make_worker(i, StageOwnership::Direction(direction), &pools);
            controls.push(ctx);
            *slot = Some(worker);
            rx_pools.push(pools);
        }
    } else {
        let shared_pools = Pools::new(workers, cfg.queue_depth, &shared.buffers_made);
        for w in 0..workers {
            let ownership = StageOwnership::Worker { worker: w, workers };
            let (worker, btx, ctx) = make_worker(w, ownership, &shared_pools);
            batch_txs.push(btx);
            controls.push(ctx);
            heartbeats.push(Heartbeat {
                thread: format!("bitsgw-worker-{w}"),
                last: Arc::clone(&worker.heartbeat),
            });
            threads.push(spawn_guarded(
                format!("bitsgw-worker-{w}"),
                &shared,
                worker,
                Worker::run,
            ));
        }
        rx_pools = vec![shared_pools.clone(), shared_pools];
    }
    for (((side, port, link), inline), pools) in [
        (Side::Host, host.rx, host_link),
        (Side::Network, network.rx, net_link),
    ]
    .into_iter()
    .zip(inline_workers)
    .zip(rx_pools)
    {
        let heartbeat = Heartbeat::new(&format!("bitsgw-rx-{}", side.name()), &shared);
        let parse_out = Arc::new(RxParseCounts::default());
        rx_parse.push(Arc::clone(&parse_out));
        let rx = RxThread {
            parse: ParseCounts::default(),
            parse_out,
            heartbeat: Arc::clone(&heartbeat.last),
            side,
            link,
            port,
            dispatch: observer.as_ref().map(|(_, published)| Dispatch {
                owners: published.read(),
                version: 0,
                published: Arc::clone(published),
                flows: FlowOwners::new(side),
            }),
            reassembler: Reassembler::new(bitsgw_ipsec::frag::ReassemblyLimits::default()),
            frag_seen: [0; FragDrop::ALL.len()],
            scratch: PacketBuf::with_capacity(70_000, bitsgw_wire::buf::DEFAULT_HEADROOM),
            workers: batch_txs.clone(),
            inline,
            pool: pools.bufs_rx,
            vecs: pools.vecs_rx,
            spare: None,
            free: Vec::with_capacity(BATCH),
            next_drop_check: Timestamp::ZERO,
            shared: Arc::clone(&shared),
        };
        threads.push(spawn_guarded(
            heartbeat.thread.clone(),
            &shared,
            rx,
            RxThread::run,
        ));
        heartbeats.push(heartbeat);
    }
    let workers = controls.len();
    Running {
        shared,
        controls,
        observer,
        threads,
        workers,
        heartbeats,
        rx_parse,
    }
}

/// The packet buffers and batch vectors that circulate between receive
/// threads and the threads that handle their frames, made up front so a
/// frame costs no allocation in steady state.
#[derive(Clone)]
struct Pools {
    bufs_tx: Sender<PacketBuf>,
    bufs_rx: Receiver<PacketBuf>,
    vecs_tx: Sender<Vec<PacketBuf>>,
    vecs_rx: Receiver<Vec<PacketBuf>>,
}

impl Pools {
    /// Pools for `workers` handling threads with queues of `queue_depth`
    /// batches.
    /// Every buffer made is counted in `made`.
    fn new(workers: usize, queue_depth: usize, made: &AtomicU64) -> Self {
        let (bufs_tx, bufs_rx) =
            bounded::<PacketBuf>(workers * queue_depth.max(1) * BATCH + 4 * BATCH);
        // Buffers for the frames of a few full batches per worker are made
        // up front (about 2.4 MiB per worker); more are made, once, if more
        // are ever in flight, and then circulate through the pool.
        let prefill = (workers * PREFILL_BUFS_PER_WORKER).min(PREFILL_BUFS);
        for _ in 0..prefill {
            let _ = bufs_tx.try_send(PacketBuf::new());
        }
        made.fetch_add(prefill as u64, Ordering::Relaxed);
        // Emptied batch vectors go back to the receive threads, so a batch
        // costs no allocation in steady state either. As many as can be in
        // flight (queued, being handled, pending) are made up front, up to
        // a bound (1 KiB each), so their number does not creep up under
        // load.
        let in_flight = workers * (queue_depth.max(1) + 3);
        let (vecs_tx, vecs_rx) = bounded::<Vec<PacketBuf>>(in_flight + 8);
        for _ in 0..in_flight.min(PREFILL_VECS) {
            let _ = vecs_tx.try_send(Vec::with_capacity(BATCH));
        }
        Pools {
            bufs_tx,
            bufs_rx,
            vecs_tx,
            vecs_rx,
        }
    }
}

/// Starts a pipeline thread running `body` on `state`. A panic stops the
/// whole pipeline (fail closed) and is reported as a dead worker.
fn spawn_guarded<T: Send + 'static>(
    name: String,
    shared: &Arc<Shared>,
    state: T,
    body: fn(&mut T),
) -> JoinHandle<()> {
    let shared = Arc::clone(shared);
    let what = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut state = state;
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut state)));
            if let Err(p) = result {
                let why = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                shared.fail(Failure::WorkerDied(format!("{what}: {why}")));
            }
        })
        .unwrap_or_else(|e| panic!("can not start thread {name}: {e}"))
}

impl Running {
    /// Why the pipeline stopped on its own, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.shared.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Whether it is still forwarding.
    pub fn is_running(&self) -> bool {
        !self.shared.stop.load(Ordering::SeqCst)
    }

    /// The pipeline's clock (what its workers take as `now`).
    pub fn now(&self) -> Timestamp {
        self.shared.now()
    }

    /// The first forwarding thread (receive thread or worker) that has not
    /// gone round its loop for longer than `max_age`, by name, or none if
    /// every one is live. A thread goes round at least every few tens of
    /// milliseconds even when idle, so a stale heartbeat means a stuck
    /// thread (or one that ended).
    pub fn stalled(&self, max_age: Duration) -> Option<&str> {
        let now = self.shared.now().0;
        let max = u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX);
        self.heartbeats
            .iter()
            .find(|h| now.saturating_sub(h.last.load(Ordering::Relaxed)) > max)
            .map(|h| h.thread.as_str())
    }

    /// Applies `action` to every worker's gateway, in the same order for
    /// all (so their SA tables stay alike). With workers, it is applied
    /// first to the keyless observer, whose new owner map the receive
    /// threads dispatch by from their next burst on: an SA's owner follows
    /// its name, so frames of an SA go to the same worker before and after.
    pub fn apply(&self, action: ControlAction) {
        if let Some((gateway, published)) = &self.observer {
            if let Ok(mut gw) = gateway.lock() {
                action(&mut gw);
                published.publish(gw.stage().owner_map());
            }
        }
        for c in &self.controls {
            let _ = c.send(Control::Apply(Arc::clone(&action)));
        }
    }

    /// How many gateways [`Running::apply`] runs an action on.
    pub fn gateways(&self) -> usize {
        usize::from(self.observer.is_some()) + self.controls.len()
    }

    /// Collects counters, SAs and events from every worker.
    pub fn report(&self, timeout: Duration) -> Report {
        let (tx, rx) = bounded(self.workers);
        let mut asked = 0;
        for c in &self.controls {
            if c.send(Control::Report(tx.clone())).is_ok() {
                asked += 1;
            }
        }
        let mut parts: Vec<(usize, Report)> = Vec::new();
        let deadline = Instant::now() + timeout;
        while parts.len() < asked {
            match rx.recv_deadline(deadline) {
                Ok(p) => parts.push(p),
                Err(_) => break,
            }
        }
        parts.sort_by_key(|(w, _)| *w);
        let mut total = Report {
            packet_buffers: self.shared.buffers_made.load(Ordering::Relaxed),
            now: self.now(),
            ..Report::default()
        };
        if let Ok(s) = self.shared.rx_stage.lock() {
            total.merge_counters(&s);
        }
        if let Ok(p) = self.shared.rx_pipeline.lock() {
            total.pipeline.merge(&p);
        }
        for p in &self.rx_parse {
            total.parse.merge(&ParseCounts {
                ip_walks: p.ip_walks.load(Ordering::Relaxed),
                spd_classifications: p.spd_classifications.load(Ordering::Relaxed),
            });
        }
        for (_, r) in parts {
            total.merge_counters(&r.stage);
            total.pipeline.merge(&r.pipeline);
            total.parse.merge(&r.parse);
            total.sas.extend(r.sas);
            total.events.extend(r.events);
            match (&mut total.mobility, r.mobility) {
                (Some(t), Some(m)) => t.merge(&m),
                (t @ None, m) => *t = m,
                (Some(_), None) => {}
            }
            for (dst, src) in [
                (&mut total.spd_hits_out, &r.spd_hits_out),
                (&mut total.spd_hits_in, &r.spd_hits_in),
            ] {
                if dst.len() < src.len() {
                    dst.resize(src.len(), 0);
                }
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
        total.sas.sort_by(|a, b| a.name.cmp(&b.name));
        total
    }

    /// Stops every thread and returns the final report.
    pub fn stop(mut self) -> (Report, Option<Failure>) {
        let report = self.report(Duration::from_secs(2));
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let failure = self.failure();
        (report, failure)
    }
}

/// Receive thread: frames in, dispatched by SA.
struct RxThread {
    /// Walks and classifications made, published to `parse_out` per burst.
    parse: ParseCounts,
    parse_out: Arc<RxParseCounts>,
    side: Side,
    link: LinkType,
    port: Box<dyn RxPort>,
    /// Workers mode: what frames are dispatched by (none running to
    /// completion, where this thread's own gateway takes every frame).
    dispatch: Option<Dispatch>,
    reassembler: Reassembler,
    /// Fragment drops of `reassembler` already counted.
    frag_seen: [u64; FragDrop::ALL.len()],
    scratch: PacketBuf,
    workers: Vec<Sender<Batch>>,
    /// Run to completion: the gateway this thread handles its frames with
    /// (instead of handing them to `workers`).
    inline: Option<Worker>,
    pool: Receiver<PacketBuf>,
    /// Batch vectors the workers have emptied.
    vecs: Receiver<Vec<PacketBuf>>,
    /// A buffer taken for a frame that did not come, kept for the next.
    spare: Option<PacketBuf>,
    /// Run to completion: the buffers of frames this thread has handled,
    /// reused without passing through a channel.
    free: Vec<PacketBuf>,
    /// When the port's kernel drops are next read.
    next_drop_check: Timestamp,
    shared: Arc<Shared>,
    heartbeat: Arc<AtomicU64>,
}

/// How often a receive thread reads its port's kernel drop count.
const KERNEL_DROP_CHECK: Duration = Duration::from_millis(100);

/// What a receive thread dispatches by: the owner map last published,
/// taken anew (one atomic load per burst, a lock only when it changed).
struct Dispatch {
    owners: Arc<OwnerMap>,
    /// The publication `owners` is.
    version: u64,
    published: Arc<PublishedOwners>,
    flows: FlowOwners,
}

impl Dispatch {
    /// Takes the owner map published since the last call, if any.
    fn refresh(&mut self) {
        let version = self.published.version.load(Ordering::Acquire);
        if version != self.version {
            self.owners = self.published.read();
            self.version = version;
        }
    }
}

/// The owner map the receive threads read, replaced whole after each
/// control.
struct PublishedOwners {
    /// Bumped after each publication.
    version: AtomicU64,
    map: Mutex<Arc<OwnerMap>>,
}

impl PublishedOwners {
    fn new(map: OwnerMap) -> Self {
        PublishedOwners {
            version: AtomicU64::new(0),
            map: Mutex::new(Arc::new(map)),
        }
    }

    fn publish(&self, map: OwnerMap) {
        if let Ok(mut m) = self.map.lock() {
            *m = Arc::new(map);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    fn read(&self) -> Arc<OwnerMap> {
        match self.map.lock() {
            Ok(m) => Arc::clone(&m),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

enum Pick {
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
struct FlowOwners {
    generation: u64,
    cache: FlowCache<Option<usize>>,
}

impl FlowOwners {
    /// The network side dispatches by SPI and never asks.
    fn new(side: Side) -> Self {
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
    fn decide(&mut self, owners: &OwnerMap, key: &FlowKey) -> SpdDecision {
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
    fn owner(&mut self, owners: &OwnerMap, key: &FlowKey) -> Option<usize> {
        let decision = self.decide(owners, key);
        owners.decision_owner(&decision)
    }
}

impl RxThread {
    fn run(&mut self) {
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
            // One frame, waiting a little; then whatever else is already
            // there, up to a batch; then hand everything over. The frames
            // of one burst share the time it was taken at.
            let mut burst_time = None;
            for i in 0..BATCH {
                let mut buf = self.take_buf();
                let got = if i == 0 {
                    self.port.recv(&mut buf)
                } else {
                    self.port.recv_nowait(&mut buf)
                };
                match got {
                    Ok(true) => {
                        let now = *burst_time.get_or_insert_with(|| self.shared.now());
                        match self.pick(&mut buf, now) {
                            Pick::Worker(w, walk) => {
                                if let Some(slot) = pending_walks[w].get_mut(pending[w].len()) {
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
                        self.flush_all(&mut pending, &pending_walks);
                        self.count_kernel_drops();
                        self.serve_until_stopped();
                        return;
                    }
                    Err(e) => {
                        self.shared.fail(Failure::Port(e.to_string()));
                        return;
                    }
                }
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

    /// A buffer for the next frame: the one kept from the last try, one
    /// this thread freed, one from the pool, or (once) a new one.
    fn take_buf(&mut self) -> PacketBuf {
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
    fn serve_until_stopped(&mut self) {
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
    fn count_kernel_drops(&mut self) {
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
    fn expire_fragments(&mut self) {
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
    fn count_frag_drops(&mut self) {
        if let Ok(mut s) = self.shared.rx_stage.lock() {
            s.record_frag_drops(&self.reassembler, &mut self.frag_seen);
        }
    }

    /// Makes this thread's walks and classifications so far readable by
    /// reports.
    fn publish_parse_counts(&self) {
        let out = &self.parse_out;
        out.ip_walks.store(self.parse.ip_walks, Ordering::Relaxed);
        out.spd_classifications
            .store(self.parse.spd_classifications, Ordering::Relaxed);
    }

    fn flush_all(&mut self, pending: &mut [Vec<PacketBuf>], walks: &[Walks]) {
        for (w, (p, walks)) in pending.iter_mut().zip(walks).enumerate() {
            if !p.is_empty() {
                self.flush(w, p, walks);
            }
        }
    }

    fn flush(&mut self, w: usize, frames: &mut Vec<PacketBuf>, walks: &Walks) {
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
    fn pick(&mut self, buf: &mut PacketBuf, now: Timestamp) -> Pick {
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
                _ => return Pick::Worker(0, None),
            },
            LinkType::RawIp => (None, 0),
        };
        self.parse.ip_walks += 1;
        let Ok(meta) = ip::parse(&buf.data()[l2..]) else {
            return Pick::Worker(0, None);
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
        // pair.
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

/// A thread's way to send on one port: a handle of its own where the port
/// can give one ([`TxPort::try_clone`]), else the port's one handle,
/// shared behind a lock.
enum TxHandle {
    Own(Box<dyn TxPort>),
    Shared(Arc<Mutex<Box<dyn TxPort>>>),
}

impl TxHandle {
    fn for_thread(port: &Arc<Mutex<Box<dyn TxPort>>>) -> TxHandle {
        let own = port.lock().ok().and_then(|p| p.try_clone());
        match own {
            Some(own) => TxHandle::Own(own),
            None => TxHandle::Shared(Arc::clone(port)),
        }
    }

    fn send(&mut self, frame: &[u8]) -> bool {
        match self {
            TxHandle::Own(port) => port.send(frame).is_ok(),
            TxHandle::Shared(port) => port
                .lock()
                .map(|mut p| p.send(frame).is_ok())
                .unwrap_or(false),
        }
    }
}

/// The sending halves of both ports, as one thread sends on them.
struct TxPorts {
    host: TxHandle,
    network: TxHandle,
}

impl TxPorts {
    /// Handles for one more thread on the ports `shared` holds.
    fn for_thread(shared: &SharedTxPorts) -> TxPorts {
        TxPorts {
            host: TxHandle::for_thread(&shared.host),
            network: TxHandle::for_thread(&shared.network),
        }
    }

    /// Sends `frame` on `side`; false if the port refused it.
    fn send(&mut self, side: Side, frame: &[u8]) -> bool {
        match side {
            Side::Host => self.host.send(frame),
            Side::Network => self.network.send(frame),
        }
    }
}

/// Both ports' sending halves as opened, from which each thread takes its
/// handles.
struct SharedTxPorts {
    host: Arc<Mutex<Box<dyn TxPort>>>,
    network: Arc<Mutex<Box<dyn TxPort>>>,
}

struct Worker {
    index: usize,
    gateway: Gateway,
    batches: Receiver<Batch>,
    control: Receiver<Control>,
    pool: Sender<PacketBuf>,
    vecs: Sender<Vec<PacketBuf>>,
    tx: TxPorts,
    host_link: LinkType,
    net_link: LinkType,
    tap: Option<SharedTap>,
    shared: Arc<Shared>,
    events: Vec<Event>,
    heartbeat: Arc<AtomicU64>,
}

impl Worker {
    fn run(&mut self) {
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

    fn handle_controls(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            self.handle_control(c);
        }
    }

    /// What a worker does between batches: timers, the endpoints and the
    /// mobility stage's own packets, events.
    fn tick(&mut self) {
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
    fn serve_leases(&mut self, now: Timestamp) {
        self.gateway.serve_leases(now);
    }

    /// Takes the stage's events: only the owner of an SA raises its events.
    fn collect_events(&mut self) {
        while let Some(e) = self.gateway.poll_event() {
            self.events.push(e);
        }
    }

    fn handle_control(&mut self, c: Control) {
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
                };
                let _ = reply.send((self.index, report));
            }
        }
    }

    fn poll_endpoints(&mut self, now: Timestamp) {
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
        self.gateway.count_drops(PipelineDrop::SendFailed, failed);
    }

    /// Handles a batch a receive thread handed over, then returns its
    /// buffers and vector to the pools.
    fn handle_batch(&mut self, batch: Batch) {
        let mut frames = batch.frames;
        self.handle_frames(batch.side, &mut frames, &batch.walks);
        for buf in frames.drain(..) {
            let _ = self.pool.try_send(buf);
        }
        let _ = self.vecs.try_send(frames);
    }

    /// Handles frames received on `side`, in place; the buffers stay the
    /// caller's to reuse.
    fn handle_frames(&mut self, side: Side, frames: &mut [PacketBuf], walks: &Walks) {
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
        for (i, buf) in frames.iter_mut().enumerate() {
            let walk = walks.get(i).and_then(Option::as_ref);
            match tap_guard.as_deref_mut() {
                Some(t) => {
                    let _ = self
                        .gateway
                        .handle_frame_walked(side, link, buf, walk, now, &mut emit, t);
                }
                None => {
                    let _ = self
                        .gateway
                        .handle_frame_walked(side, link, buf, walk, now, &mut emit, &mut NoTap);
                }
            }
        }
        drop(tap_guard);
        self.gateway.count_drops(PipelineDrop::SendFailed, failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ipsec::config::load_policy_file;
    use bitsgw_ipsec::selector::{proto, Addr, NextLayer, Selector};
    use bitsgw_ipsec::spd::{Action, SpdEntry};
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
        let set = load_policy_file(&path).unwrap();
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
