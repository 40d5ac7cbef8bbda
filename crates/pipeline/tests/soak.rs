//! Soak: millions of frames, valid and hostile mixed (the cases of
//! `common::cases`, plus valid traffic both ways), through the threaded
//! runner with several workers on in-memory Ethernet ports.
//!
//! It must not panic or lose a worker; memory must stay flat after
//! warm-up: the live heap (every thread's allocations less its frees,
//! counted by the test's global allocator) and VmRSS are sampled at 10 %,
//! 50 % and 100 %, and neither may grow between the later samples, so a
//! slow leak fails instead of hiding under a generous bound; and the counters
//! must reconcile exactly: frames in = frames out + drops by reason, where
//! a reassembled datagram stands for its fragments (each here is two, one
//! absorbed) and a packet answered with an ICMP error is counted once as
//! sent and once under `too_big_icmp_sent`.
//!
//! `soak_short` (200 000 frames) runs with the other tests; `soak_full`
//! (10 million, `#[ignore]`d) is what `make soak` runs.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::DropReason;
use bitsgw_pipeline::runner::{self, Report, RunnerConfig};
use bitsgw_pipeline::{LinkType, Side};
use common::*;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, by every thread of the process.
fn live_heap_bytes() -> i64 {
    // A reallocation is counted in both totals by what it changed.
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Frames in flight at most: injected, then waited for.
const ROUND: u64 = 16_384;

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Frames the pipeline has accounted for: sent, dropped (less those
/// answered with ICMP, which were also sent), absorbed in reassembly.
fn accounted(r: &Report) -> u64 {
    let p = &r.pipeline;
    p.host_tx.frames + p.net_tx.frames + r.stage.total_drops() + p.total_drops()
        - r.stage.drops(DropReason::TooBig)
        + r.stage.reassembled
}

/// Memory at one point of the run, at rest (every frame accounted for).
#[derive(Debug, Clone, Copy)]
struct Sample {
    frames: u64,
    rss_kib: u64,
    heap_bytes: i64,
    /// [`Report::packet_buffers`]: growth by a new high of frames in
    /// flight, bounded by the queue depths, not a leak.
    packet_buffers: u64,
}

#[derive(Debug)]
struct Soak {
    frames: u64,
    seconds: f64,
    samples: Vec<Sample>,
    report: Report,
}

/// `workers` 0: run to completion (each port's receive thread handles its
/// own frames).
fn soak(total: u64, workers: usize) -> Soak {
    // Memory is the process's: one soak at a time, or each sees the
    // others' growth.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = RunnerConfig {
        workers: workers.max(1),
        queue_depth: 1024,
        run_to_completion: workers == 0,
    };
    let (host, host_in, host_out) = chan::port_of(LinkType::Ethernet);
    let (net, net_in, net_out) = chan::port_of(LinkType::Ethernet);
    let running = runner::start(&cfg, host, net, &|| stage("site-to-site-a.json"), None);
    // Drain both ports; the network side must carry ESP only.
    let sent = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let drains: Vec<_> = [(host_out, 0usize), (net_out, 1usize)]
        .into_iter()
        .map(|(rx, i)| {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                for f in rx.iter() {
                    if i == 1 {
                        assert!(is_esp(&f) && !carries_mark(&f), "cleartext: {f:02x?}");
                    }
                    sent[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut peer = Peer::new();
    let start = Instant::now();
    let mut injected = 0u64;
    let mut marks = [total / 10, total / 2, total].into_iter().peekable();
    let mut samples = Vec::new();
    let mut in_round = 0u64;
    let mut n = 0u32;
    while injected < total {
        // One set of hostile cases, then as much valid traffic each way.
        let cases = cases(&mut peer);
        let mut frames: Vec<Frame> = cases
            .into_iter()
            .filter(|c| c.settles)
            .flat_map(|c| c.frames)
            .collect();
        let hostile = frames.len();
        for _ in 0..hostile / 2 {
            n = n.wrapping_add(1);
            let len = 16 + (n as usize * 37) % 1200;
            frames.push(Frame {
                side: Side::Network,
                at: bitsgw_wire::Timestamp::ZERO,
                bytes: eth(Side::Network, &peer.valid(len)),
            });
            frames.push(Frame {
                side: Side::Host,
                at: bitsgw_wire::Timestamp::ZERO,
                bytes: eth(Side::Host, &marked_udp(HOST_A, HOST_B, len, true)),
            });
        }
        for f in frames {
            if injected == total {
                break;
            }
            match f.side {
                Side::Host => host_in.send(f.bytes).unwrap(),
                Side::Network => net_in.send(f.bytes).unwrap(),
            }
            injected += 1;
            in_round += 1;
        }
        if in_round >= ROUND || injected == total {
            in_round = 0;
            let at_rest = wait_for(&running, injected, &sent);
            if marks.peek().is_some_and(|m| injected >= *m) {
                marks.next();
                samples.push(Sample {
                    frames: injected,
                    rss_kib: vm_rss_kib(),
                    heap_bytes: live_heap_bytes(),
                    packet_buffers: at_rest.packet_buffers,
                });
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let (report, failure) = running.stop();
    assert_eq!(failure, None, "the pipeline stopped on its own");
    drop((host_in, net_in));
    for d in drains {
        d.join().unwrap();
    }
    let p = &report.pipeline;
    assert_eq!(sent[0].load(Ordering::Relaxed), p.host_tx.frames);
    assert_eq!(sent[1].load(Ordering::Relaxed), p.net_tx.frames);
    Soak {
        frames: injected,
        seconds,
        samples,
        report,
    }
}

/// Waits until every injected frame is accounted for, and every frame
/// sent has been taken off the ports (so memory is sampled at rest); the
/// last report.
fn wait_for(running: &runner::Running, injected: u64, sent: &[AtomicU64; 2]) -> Report {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = running.report(Duration::from_secs(5));
        let a = accounted(&r);
        assert!(
            a <= injected,
            "more accounted ({a}) than injected ({injected})"
        );
        let drained = sent[0].load(Ordering::Relaxed) == r.pipeline.host_tx.frames
            && sent[1].load(Ordering::Relaxed) == r.pipeline.net_tx.frames;
        if a == injected && drained {
            return r;
        }
        assert!(
            Instant::now() < deadline && running.is_running(),
            "stuck at {a} of {injected}: {:?}",
            running.failure()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn check(s: &Soak, rss_bound_kib: u64) {
    let r = &s.report;
    let p = &r.pipeline;
    let drops: Vec<_> = r.stage.nonzero_drops().collect();
    println!(
        "soak: {} frames in {:.1} s ({:.0} frames/s)",
        s.frames,
        s.seconds,
        s.frames as f64 / s.seconds
    );
    println!(
        "  out: host {} network {}; reassembled {}; stage drops {:?}; pipeline drops {}",
        p.host_tx.frames,
        p.net_tx.frames,
        r.stage.reassembled,
        drops,
        p.total_drops()
    );
    for m in &s.samples {
        println!(
            "  after {} frames: VmRSS {} KiB, live heap {} bytes, packet buffers {}",
            m.frames, m.rss_kib, m.heap_bytes, m.packet_buffers
        );
    }
    // Exact reconciliation.
    assert_eq!(accounted(r), s.frames);
    // Valid traffic went through both ways, hostile traffic was dropped
    // under many reasons.
    assert!(r.stage.inbound_decrypted > s.frames / 5, "{r:?}");
    assert!(r.stage.outbound_protected > s.frames / 5, "{r:?}");
    assert!(drops.len() >= 10, "{drops:?}");
    // Flat memory after warm-up: between samples, the live heap may grow
    // only by the packet buffers a new high of frames in flight made, and
    // resident memory by little more.
    assert_eq!(s.samples.len(), 3);
    for w in s.samples.windows(2) {
        let (a, b) = (w[0], w[1]);
        let buffers = (b.packet_buffers - a.packet_buffers) * PACKET_BUFFER_BYTES;
        let heap = b.heap_bytes - a.heap_bytes;
        assert!(
            heap <= buffers as i64 + HEAP_SLACK_BYTES,
            "the live heap grew by {heap} bytes from {} to {} frames, {buffers} of them new packet buffers",
            a.frames,
            b.frames
        );
        let rss = b.rss_kib.saturating_sub(a.rss_kib);
        assert!(
            rss <= buffers / 1024 + rss_bound_kib,
            "VmRSS grew by {rss} KiB from {} to {} frames, {} KiB of them new packet buffers",
            a.frames,
            b.frames,
            buffers / 1024
        );
    }
}

/// What a packet buffer holds on the heap.
const PACKET_BUFFER_BYTES: u64 = bitsgw_wire::buf::DEFAULT_CAPACITY as u64;

/// Heap growth between samples that is not a leak: the allocator's and the
/// channels' bookkeeping.
const HEAP_SLACK_BYTES: i64 = 256 * 1024;

#[test]
fn soak_short() {
    let s = soak(200_000, 3);
    check(&s, 8 * 1024);
}

#[test]
fn soak_short_running_to_completion() {
    let s = soak(100_000, 0);
    check(&s, 8 * 1024);
}

#[test]
#[ignore = "ten million frames: make soak"]
fn soak_full() {
    let s = soak(10_000_000, 3);
    check(&s, 8 * 1024);
}
