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
//! [`LocalEndpoint`] per side from [`start_configured`]'s endpoint maker. Frames
//! for the appliance reach whichever worker their flow hashes to, so the
//! instances should share one host stack (`bitsgw-io`'s
//! `SmoltcpEndpoint` clones do): then a neighbor learnt by one worker is
//! known to all. Each worker also polls its endpoints every loop, which
//! sends what the shared stack queued for any of them.
//!
//! The mobility stage (`ha` and `mn` roles): [`start_configured`] gives
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
//! Queues ([`start_queues`], the `queue` module): one receive queue per
//! worker, each with its own handles on both ports and its own gateway,
//! running to completion; a frame whose SA another queue owns is handed
//! to that queue.
//!
//! Fail closed: a full worker queue drops the frame (counted), a worker
//! that dies stops forwarding altogether, and the runner reports why.

mod queue;
mod rx;
mod tx;
mod worker;

pub use queue::{queue_for, start_queues, QueueConfig, QueuePorts};

use rx::*;
use tx::*;
use worker::*;

use crate::counters::{PipelineCounters, PipelineDrop};
use crate::endpoint::LocalEndpoint;
use crate::gateway::{FrameWalk, Gateway, Mobility, NoTap, Side, Tap};
use crate::port::{Port, PortError, RxPort, TxPort};
use bitsgw_frag::{FragDrop, Reassembler, Reassembly};
use bitsgw_ipsec::counters::StageCounters;
use bitsgw_ipsec::flow::flow_key;
use bitsgw_ipsec::flow_cache::FlowCache;
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
/// Packet buffers made when the runner starts, per worker and at most:
/// a window of 256 frames in flight, the batch being handled and the
/// receive thread's spares, so that a worker's pool does not grow once
/// traffic is flowing.
const PREFILL_BUFS_PER_WORKER: usize = 10 * BATCH;
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
    /// Its mode (with the tunnel's endpoints).
    pub mode: bitsgw_ipsec::sa::Mode,
    /// Its transform.
    pub transform: bitsgw_ipsec::crypto::TransformId,
    /// The AES-GCM backend it uses (its `auto` setting resolved).
    pub backend: bitsgw_ipsec::crypto::GcmBackend,
    /// The backend as configured (`auto` or a name).
    pub backend_setting: bitsgw_ipsec::gcm_choice::BackendSetting,
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
    /// Each worker's (or queue's) own pipeline counters, by index, of
    /// which `pipeline` holds the sum with the receive threads'.
    pub by_worker: Vec<PipelineCounters>,
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
    /// Set when [`Running::stall`] asks a receive thread to block (one
    /// relaxed load per burst otherwise).
    stall_asked: AtomicBool,
    stall: Mutex<Option<(String, Duration)>>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            origin: Instant::now(),
            rx_stage: Mutex::new(StageCounters::default()),
            rx_pipeline: Mutex::new(PipelineCounters::default()),
            buffers_made: AtomicU64::new(0),
            stall_asked: AtomicBool::new(false),
            stall: Mutex::new(None),
        })
    }

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

/// A worker's (or a queue's) gateway: a stage from `make_stage` owning
/// what `ownership` says, the appliance's endpoints, the mobility stage if
/// any, then `configure`.
fn build_gateway(
    make_stage: &dyn Fn() -> IpsecStage,
    ownership: StageOwnership,
    make_endpoint: &EndpointMaker<'_>,
    mobility: Option<Mobility>,
    configure: &dyn Fn(&mut Gateway),
) -> Gateway {
    let mut stage = make_stage();
    stage.set_ownership(ownership);
    let mut gateway = Gateway::new(stage);
    for side in [Side::Host, Side::Network] {
        if let Some(ep) = make_endpoint(side) {
            gateway.set_endpoint(side, ep);
        }
    }
    if let Some(m) = mobility {
        gateway.set_mobility(m);
    }
    configure(&mut gateway);
    gateway
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
    start_configured(
        cfg,
        host,
        network,
        make_stage,
        &|_| None,
        &|| None,
        &|_| {},
        tap,
    )
}

/// Makes a worker's mobility stage, or none (the `gateway` role).
pub type MobilityMaker<'a> = dyn Fn() -> Option<Mobility> + 'a;

/// Makes a worker's endpoint for one side, or none (no own addresses there).
pub type EndpointMaker<'a> = dyn Fn(Side) -> Option<Box<dyn LocalEndpoint>> + 'a;

/// [`start`], with the appliance's own endpoints (`make_endpoint`, called
/// for each side once per worker), the mobility stage (`make_mobility`,
/// called once per worker; the roles that have one run a single worker:
/// the binding state is that worker's) and `configure` called on each
/// worker's gateway before it starts (routed mode:
/// [`Gateway::set_routed`] with clones of one [`crate::Routed`], so the
/// workers share its neighbor tables).
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
    let shared = Shared::new();
    let host_link = host.rx.link_type();
    let net_link = network.rx.link_type();
    let tx = SharedTxPorts {
        host: Arc::new(Mutex::new(host.tx)),
        network: Arc::new(Mutex::new(network.tx)),
    };
    let make_gateway = |ownership: StageOwnership| {
        build_gateway(
            make_stage,
            ownership,
            make_endpoint,
            make_mobility(),
            configure,
        )
    };
    let make_worker = |index: usize, ownership: StageOwnership, pools: &Pools| {
        let (btx, brx) = bounded::<Batch>(cfg.queue_depth.max(1));
        let (ctx, crx) = bounded::<Control>(64);
        let env = WorkerEnv {
            pools,
            tx: &tx,
            host_link,
            net_link,
            tap: &tap,
            shared: &shared,
        };
        let worker = Worker::new(
            index,
            make_gateway(ownership),
            (brx, crx),
            &env,
            Arc::new(AtomicU64::new(shared.now().0)),
        );
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
            reassembler: Reassembler::new(bitsgw_frag::ReassemblyLimits::default()),
            frag_seen: [0; FragDrop::ALL.len()],
            scratch: PacketBuf::with_capacity(70_000, bitsgw_wire::buf::DEFAULT_HEADROOM),
            workers: batch_txs.clone(),
            home: None,
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
        // up front (about 3 MiB per worker); more are made, once, if more
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

    /// Blocks the forwarding thread named `thread` (a receive thread or a
    /// worker) once for `length`: how the watchdog's tests make a thread
    /// stuck. Receive threads apply no controls, so they look for the
    /// request between bursts.
    pub fn stall(&self, thread: &str, length: Duration) {
        if let Ok(mut s) = self.shared.stall.lock() {
            *s = Some((thread.to_string(), length));
        }
        self.shared.stall_asked.store(true, Ordering::Release);
        let name = thread.to_string();
        self.apply(Arc::new(move |_gw| {
            if std::thread::current().name() == Some(name.as_str()) {
                std::thread::sleep(length);
            }
        }));
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
            total.by_worker.push(r.pipeline.clone());
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
