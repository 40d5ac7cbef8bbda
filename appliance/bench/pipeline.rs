//! The bench's ports around the threaded pipeline: the generating port
//! that keeps a window of frames in flight, the counting port that takes
//! latency samples, and one run of the pipeline between them.

use super::traffic::{host_a, host_b};
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::ownership::StageOwnership;
use bitsgw_ipsec::selector::{proto, Addr, FlowKey, NextLayer};
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::port::{Port, PortError, RxPort, TxPort};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_pipeline::LinkType;
use bitsgw_wire::PacketBuf;
use hdrhistogram::Histogram;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A value on a cache line of its own (128 bytes: adjacent-line
/// prefetching pairs lines), so that counters written per packet by
/// different threads do not bounce one line between cores: the harness
/// would measure that, not the pipeline.
#[repr(align(128))]
pub(super) struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub(super) struct Shared {
    origin: Instant,
    /// Packets the generator may hand over in total.
    target: AtomicU64,
    /// Packets handed over, by generator (each written by its generator).
    generated: Vec<OwnLine<AtomicU64>>,
    /// Packets emitted on the expected side, by the generator that made
    /// them (written by the emitters).
    emitted: Vec<OwnLine<AtomicU64>>,
    /// Goodput bytes of the emitted packets, likewise.
    bytes: Vec<OwnLine<AtomicU64>>,
    /// Frames emitted on the wrong side.
    wrong: AtomicU64,
    /// Latency is recorded for packets numbered from here on.
    record_from: AtomicU64,
    /// Hand-over times (ns since `origin`) of sampled packets.
    stamps: Vec<AtomicU64>,
    latency: Mutex<Histogram<u64>>,
    closed: AtomicBool,
}

impl Shared {
    fn ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn sum(counts: &[OwnLine<AtomicU64>]) -> u64 {
        counts.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }

    fn generated(&self) -> u64 {
        Self::sum(&self.generated)
    }

    fn emitted(&self) -> u64 {
        Self::sum(&self.emitted)
    }

    fn bytes(&self) -> u64 {
        Self::sum(&self.bytes)
    }

    /// The highest packet number any generator reached.
    fn reached(&self) -> u64 {
        let gens = self.generated.len() as u64;
        (0..gens)
            .map(
                |g| match self.generated[g as usize].load(Ordering::Acquire) {
                    0 => 0,
                    made => (made - 1) * gens + g + 1,
                },
            )
            .max()
            .unwrap_or(0)
    }
}

fn counters(n: usize) -> Vec<OwnLine<AtomicU64>> {
    (0..n).map(|_| OwnLine(AtomicU64::new(0))).collect()
}

/// One generator: with `gens` of them, generator `gen` makes the packets
/// numbered `gen`, `gen + gens`, ... (the number travels in the source
/// MAC), from its own frames.
pub(super) struct GenRx {
    frames: Vec<(Vec<u8>, usize)>,
    gen: u64,
    gens: u64,
    /// Packets this generator made.
    made: u64,
    window: u64,
    /// `emitted` as last read: the shared count is read again only when
    /// the window looks full by this one.
    emitted_seen: u64,
    shared: Arc<Shared>,
}

impl GenRx {
    fn try_one(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let s = &*self.shared;
        let n = self.made * self.gens + self.gen;
        if n >= s.target.load(Ordering::Acquire) {
            return Ok(false);
        }
        let g = self.gen as usize;
        if self.made - self.emitted_seen >= self.window {
            self.emitted_seen = s.emitted[g].load(Ordering::Acquire);
            if self.made - self.emitted_seen >= self.window {
                return Ok(false);
            }
        }
        let (frame, _) = &self.frames[(self.made % self.frames.len() as u64) as usize];
        buf.set(frame).map_err(|_| PortError::FrameTooLarge {
            port: "bench".into(),
            len: frame.len(),
            capacity: buf.capacity(),
        })?;
        // The packet's number in the source MAC (02:nn:nn:nn:nn:nn).
        buf.data_mut()[7..12].copy_from_slice(&n.to_be_bytes()[3..]);
        if n.is_multiple_of(SAMPLE) {
            s.stamps[(n / SAMPLE) as usize % RING].store(s.ns(), Ordering::Relaxed);
        }
        self.made += 1;
        s.generated[g].store(self.made, Ordering::Release);
        Ok(true)
    }
}

impl RxPort for GenRx {
    fn name(&self) -> &str {
        "bench-gen"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    /// With the window full, waits as a receive thread on an idle port
    /// does: briefly spinning, then sleeping, so the waiting generator
    /// does not take the CPU from the workers it waits for (on a machine
    /// with as many cores as pipeline threads, a spinning generator would
    /// measure the scheduler, not the pipeline).
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, GEN_WAIT)
    }
    fn recv_within(&mut self, buf: &mut PacketBuf, wait: Duration) -> Result<bool, PortError> {
        let mut deadline = None;
        let mut spins = 0u32;
        loop {
            if self.try_one(buf)? {
                return Ok(true);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(PortError::Closed {
                    port: "bench-gen".into(),
                });
            }
            spins += 1;
            if spins < GEN_SPINS {
                std::hint::spin_loop();
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(GEN_NAP);
        }
    }
    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.try_one(buf)
    }
}

/// The receiving half of the side nothing arrives on.
pub(super) struct IdleRx {
    shared: Arc<Shared>,
}

impl RxPort for IdleRx {
    fn name(&self) -> &str {
        "bench-idle"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, Duration::from_millis(5))
    }
    fn recv_within(&mut self, _buf: &mut PacketBuf, wait: Duration) -> Result<bool, PortError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PortError::Closed {
                port: "bench-idle".into(),
            });
        }
        std::thread::sleep(wait);
        Ok(false)
    }
}

#[derive(Clone)]
pub(super) struct CountTx {
    expected: bool,
    /// Goodput bytes per emitted frame (the inner packet), by generator
    /// and frame index.
    goodput: Arc<Vec<Vec<usize>>>,
    shared: Arc<Shared>,
}

impl TxPort for CountTx {
    fn name(&self) -> &str {
        "bench-count"
    }
    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }
    /// Each worker counts through its own handle (the counts are shared
    /// atomics), as it sends on its own handle of a packet socket.
    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        Some(Box::new(self.clone()))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        let s = &*self.shared;
        if !self.expected || frame.len() < 14 {
            s.wrong.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut tag = [0u8; 8];
        tag[3..].copy_from_slice(&frame[7..12]);
        let n = u64::from_be_bytes(tag);
        if n.is_multiple_of(SAMPLE) && n >= s.record_from.load(Ordering::Relaxed) {
            let sent = s.stamps[(n / SAMPLE) as usize % RING].load(Ordering::Relaxed);
            let lat = s.ns().saturating_sub(sent).max(1);
            if let Ok(mut h) = s.latency.lock() {
                h.saturating_record(lat);
            }
        }
        let gens = self.goodput.len() as u64;
        let (g, made) = ((n % gens) as usize, n / gens);
        let own = &self.goodput[g];
        let len = own[(made % own.len() as u64) as usize];
        s.bytes[g].fetch_add(len as u64, Ordering::Relaxed);
        s.emitted[g].fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Runs one configuration through the threaded pipeline.
pub(super) fn run_pipeline(
    opts: &Options,
    t: TransformId,
    mode: BenchMode,
    dir: Dir,
    size: Size,
    workers: Threads,
    tick: &dyn Fn(),
) -> Result<Row, String> {
    let all_frames = frames(t, mode, dir, size, opts.flows)?;
    let text = policy(true, t, mode, opts.flows);
    // Validate once, so the makers below can not fail.
    let observer = stage(&text)?;
    let gens = match workers {
        Threads::Queues(n) => n,
        Threads::Workers(_) | Threads::RunToCompletion => 1,
    };
    let per_gen = spread(&all_frames, opts.flows, gens, dir, observer, opts.flow_hash)?;
    let goodput: Arc<Vec<Vec<usize>>> = Arc::new(
        per_gen
            .iter()
            .map(|f| f.iter().map(|(_, l)| *l).collect())
            .collect(),
    );
    let latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        target: AtomicU64::new(0),
        generated: counters(gens),
        emitted: counters(gens),
        bytes: counters(gens),
        wrong: AtomicU64::new(0),
        record_from: AtomicU64::new(u64::MAX),
        stamps: (0..RING).map(|_| AtomicU64::new(0)).collect(),
        latency: Mutex::new(latency),
        closed: AtomicBool::new(false),
    });
    let window = (opts.window / gens as u64).max(1);
    let counter = |expected| -> Box<dyn TxPort> {
        Box::new(CountTx {
            expected,
            goodput: Arc::clone(&goodput),
            shared: Arc::clone(&shared),
        })
    };
    // One generating port per queue, on the side the traffic enters.
    let mut pairs: Vec<(Port, Port)> = per_gen
        .into_iter()
        .enumerate()
        .map(|(g, frames)| {
            let gen: Box<dyn RxPort> = Box::new(GenRx {
                frames,
                gen: g as u64,
                gens: gens as u64,
                made: 0,
                emitted_seen: 0,
                window,
                shared: Arc::clone(&shared),
            });
            let idle: Box<dyn RxPort> = Box::new(IdleRx {
                shared: Arc::clone(&shared),
            });
            match dir {
                Dir::Encrypt => (
                    Port {
                        rx: gen,
                        tx: counter(false),
                    },
                    Port {
                        rx: idle,
                        tx: counter(true),
                    },
                ),
                Dir::Decrypt => (
                    Port {
                        rx: idle,
                        tx: counter(true),
                    },
                    Port {
                        rx: gen,
                        tx: counter(false),
                    },
                ),
            }
        })
        .collect();
    let make = || stage(&text).unwrap_or_else(|_| IpsecStage::new(StageConfig::default()));
    let running = match workers {
        Threads::Queues(_) => runner::start_queues(
            &runner::QueueConfig {
                // In flight at most `window` frames: an inbox of that many
                // batches can never be full.
                inbox_depth: usize::try_from(opts.window).unwrap_or(usize::MAX),
            },
            pairs
                .into_iter()
                .map(|(host, network)| runner::QueuePorts { host, network })
                .collect(),
            &make,
            &|_| None,
            &|_| {},
            None,
        ),
        Threads::Workers(_) | Threads::RunToCompletion => {
            let (host, network) = pairs.remove(0);
            let cfg = RunnerConfig {
                workers: match workers {
                    Threads::Workers(n) => n,
                    _ => 1,
                },
                run_to_completion: workers == Threads::RunToCompletion,
                // In flight at most `window` frames: a queue of that many
                // batches can never be full.
                queue_depth: usize::try_from(opts.window).unwrap_or(usize::MAX),
            };
            runner::start(&cfg, host, network, &make, None)
        }
    };

    // Wait until `emitted` reaches `n`, or fail on a stall.
    let wait_for = |n: u64| -> Result<(), String> {
        let mut last = shared.emitted();
        let mut since = Instant::now();
        while shared.emitted() < n {
            std::thread::sleep(Duration::from_micros(500));
            tick();
            let now = shared.emitted();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > STALL {
                return Err(format!(
                    "stalled: {} of {n} packets out, {} handed over",
                    now,
                    shared.generated()
                ));
            }
            if let Some(f) = running.failure() {
                return Err(f.to_string());
            }
        }
        Ok(())
    };

    let warm = match opts.seconds {
        Some(_) => 20_000,
        None => (opts.packets / 10).clamp(500, 20_000),
    };
    shared.target.store(warm, Ordering::Release);
    let result = wait_for(warm).and_then(|()| {
        let bytes0 = shared.bytes();
        shared.record_from.store(warm, Ordering::Release);
        let t0 = Instant::now();
        let (measured, bytes, elapsed) = match opts.seconds {
            None => {
                shared.target.store(warm + opts.packets, Ordering::Release);
                wait_for(warm + opts.packets)?;
                let el = t0.elapsed().as_secs_f64();
                (opts.packets, shared.bytes() - bytes0, el)
            }
            Some(secs) => {
                shared.target.store(u64::MAX, Ordering::Release);
                while t0.elapsed().as_secs_f64() < secs {
                    std::thread::sleep(Duration::from_millis(1));
                    tick();
                }
                let out = shared.emitted();
                let bytes = shared.bytes();
                let el = t0.elapsed().as_secs_f64();
                // Stop generating and let what is in flight drain.
                shared.target.store(shared.reached(), Ordering::Release);
                std::thread::sleep(Duration::from_millis(1));
                wait_for(shared.generated())?;
                (out - warm, bytes - bytes0, el)
            }
        };
        Ok((measured, bytes, elapsed))
    });
    shared.closed.store(true, Ordering::Release);
    let (report, failure) = running.stop();
    let (measured, bytes, elapsed) = result?;
    if let Some(f) = failure {
        return Err(f.to_string());
    }
    let drops = report.stage.total_drops() + report.pipeline.total_drops();
    let h = shared
        .latency
        .lock()
        .map_err(|_| "latency histogram poisoned".to_string())?;
    Ok(Row {
        transform: t,
        mode,
        dir,
        size,
        workers,
        packets_in: shared.generated(),
        packets_out: shared.emitted() + shared.wrong.load(Ordering::Acquire),
        drops,
        measured,
        elapsed,
        bytes,
        p50_ns: h.value_at_quantile(0.50),
        p99_ns: h.value_at_quantile(0.99),
        samples: h.len(),
        ceiling_ns: 0.0,
        ceilings: Vec::new(),
        backend: super::traffic::gcm_preference().for_transform(t),
        handed_over: report.pipeline.handed_over,
    })
}

/// Prebuilt frames with the goodput bytes of each.
type Frames = Vec<(Vec<u8>, usize)>;

/// The frames each of `gens` generators hands over: those a fanout group
/// of `gens` sockets would give its socket. Packet `i` of `frames` is of
/// flow `i % flows` (see [`frames`]). As the appliance's steering programs
/// send them (`bitsgw_io::steering`): decrypting, ESP goes to the queue
/// that owns its SPI; encrypting, a flow to the owner of the first SPD
/// entry its addresses match, which for the bench's one-host-pair entries
/// is its SA's owner. `--flow-hash` spreads encrypted flows by a hash of
/// their addresses instead, as the kernel's flow hash (whose seed is
/// random) would: a flow's queue then need not be its SA's owner, and
/// those frames are handed over.
fn spread(
    frames: &[(Vec<u8>, usize)],
    flows: usize,
    gens: usize,
    dir: Dir,
    mut observer: IpsecStage,
    flow_hash: bool,
) -> Result<Vec<Frames>, String> {
    observer.set_ownership(StageOwnership::Observer { workers: gens });
    let owners = observer.owner_map();
    let queue_of = |flow: usize| -> usize {
        match dir {
            Dir::Decrypt => owners.inbound_owner(0x2000 + flow as u32).unwrap_or(0) % gens,
            Dir::Encrypt if !flow_hash => {
                owners
                    .outbound_owner(&FlowKey {
                        local: Addr::from(IpAddr::V4(host_a(flow))),
                        remote: Addr::from(IpAddr::V4(host_b(flow))),
                        proto: proto::UDP,
                        next: NextLayer::Ports {
                            local: 4000,
                            remote: 5000,
                        },
                    })
                    .unwrap_or(0)
                    % gens
            }
            Dir::Encrypt => {
                let (a, b) = (
                    u64::from(u32::from(host_a(flow))),
                    u64::from(u32::from(host_b(flow))),
                );
                (((a << 32 | b).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % gens as u64) as usize
            }
        }
    };
    let mut per_gen = vec![Vec::new(); gens];
    for (i, f) in frames.iter().enumerate() {
        per_gen[queue_of(i % flows)].push(f.clone());
    }
    if let Some(g) = per_gen.iter().position(Vec::is_empty) {
        return Err(format!(
            "{flows} flows over {gens} queues leave queue {g} without traffic: give more --flows"
        ));
    }
    Ok(per_gen)
}
