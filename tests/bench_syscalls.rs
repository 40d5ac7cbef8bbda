//! `make bench-syscalls`: what the kernel does per packet for the two
//! bitsgw gateways of `make bench-e2e` (host A - gateway A - router -
//! gateway B - host B over veth pairs, AF_PACKET ports), with their
//! AF_PACKET ports sending one `send(2)` per frame, one `sendmmsg(2)` per
//! burst (the default), and one `sendmmsg(2)` per burst past the queueing
//! discipline (`PACKET_QDISC_BYPASS`); the mode is chosen by
//! [`bitsgw_io::SEND_MODE_VARIABLE`] in the gateways' environment. Built
//! with the feature `af-xdp` (`cargo test --release --features af-xdp
//! ...`), a fourth mode gives both gateways AF_XDP ports instead.
//!
//! Each measurement runs iperf3 TCP from host A to host B for
//! [`IPERF_SECONDS`] and, after the first second, counts for
//! [`MEASURE_SECONDS`] both gateway processes (every thread) with
//! `perf stat -p`: task-clock, context switches, every system call
//! (`raw_syscalls:sys_enter`) and the sending and waiting ones by name
//! (tracepoints), and their user and system time from `/proc/PID/stat`
//! (clock ticks). It divides by the frames the two gateways received in
//! that window (their interfaces' `rx_packets`: each is forwarded once).
//! On a veth pair a send runs the peer's receive path in the sender's
//! system call (and its softirq), so the system time per packet includes
//! the router's forwarding and the next gateway's or host's receive.
//!
//! Modes alternate within each run and each row is the median of
//! [`runs`] runs, each figure on its own. Rows: BYPASS policies with two
//! workers and running to completion, and IKE-keyed ESP AES-GCM-128
//! running to completion. Ignored by `cargo test` (it measures, about six
//! minutes); needs root, iperf3 and perf, and says so and returns without
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "bench_e2e/lab.rs"]
mod lab;

use common::ike::{gateway_with, router_answers_for_gateways, socket_with, RUN_TO_COMPLETION};
use common::{is_root, wait_for, Lab};
use lab::{build, bypass_policy, config, socket, start, tunnel_up, PSK};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::Command;
use std::time::Duration;

/// How long iperf3 sends.
const IPERF_SECONDS: u64 = 7;
/// How long the gateways are counted, from a second after iperf3 starts.
const MEASURE_SECONDS: u64 = 5;

/// The software events counted; hardware counters need not exist (a
/// guest often has none).
const EVENTS: [&str; 8] = [
    "task-clock",
    "context-switches",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmmsg",
    "syscalls:sys_enter_poll",
    "syscalls:sys_enter_recvmsg",
    "syscalls:sys_enter_futex",
];

/// The send modes compared, as [`bitsgw_io::SEND_MODE_VARIABLE`] names
/// them, and, built with the feature `af-xdp`, [`AF_XDP`].
#[cfg(not(feature = "af-xdp"))]
const MODES: &[&str] = &["per-frame", "batch", "batch-qdisc-bypass"];
#[cfg(feature = "af-xdp")]
const MODES: &[&str] = &["per-frame", "batch", "batch-qdisc-bypass", AF_XDP];

/// The mode in which both gateways' ports are AF_XDP ports instead.
#[cfg(feature = "af-xdp")]
const AF_XDP: &str = "af-xdp";

/// Runs per mode and row unless `BITSGW_SYSCALL_RUNS` says otherwise.
fn runs() -> usize {
    std::env::var("BITSGW_SYSCALL_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// One measurement's figures per packet (and its throughput).
#[derive(Debug, Clone, Default)]
struct PerPacket {
    gbits: f64,
    packets_per_second: f64,
    /// Microseconds of system time per packet.
    sys_us: f64,
    /// Microseconds of user time per packet.
    user_us: f64,
    /// Each perf event's count per packet (task-clock in microseconds).
    events: BTreeMap<String, f64>,
}

/// User and system time of process `pid`, every thread, in seconds.
fn cpu_times(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it do not.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = clock_ticks_per_second();
    let field = |i: usize| fields[i].parse::<f64>().unwrap() / tick;
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after
    // the name and state.
    (field(11), field(12))
}

/// The unit of `/proc/PID/stat`'s times (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Frames received on both interfaces of a gateway namespace.
fn received(lab: &Lab, ns: &str) -> u64 {
    ["host", "wan"]
        .iter()
        .map(|dev| {
            lab.exec(
                ns,
                &[
                    "cat",
                    &format!("/sys/class/net/{dev}/statistics/rx_packets"),
                ],
            )
            .trim()
            .parse::<u64>()
            .unwrap()
        })
        .sum()
}

/// `perf stat` on processes `pids` for [`MEASURE_SECONDS`]: each event's
/// count (task-clock in milliseconds, as perf gives it).
fn perf_stat(pids: &[u32]) -> BTreeMap<String, f64> {
    let pids = pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("perf")
        .args(["stat", "-x", ",", "-e", &EVENTS.join(","), "-p", &pids])
        .args(["--", "sleep", &MEASURE_SECONDS.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "perf stat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CSV lines on standard error: value, unit, event, ...
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|line| {
            let mut f = line.split(',');
            let value = f.next()?.parse::<f64>().ok()?;
            let _unit = f.next()?;
            Some((f.next()?.to_string(), value))
        })
        .collect()
}

/// One measurement with gateways `ga` and `gb` (child indexes) running.
fn measure(lab: &mut Lab, ga: usize, gb: usize) -> PerPacket {
    let pids = [lab.children[ga].id(), lab.children[gb].id()];
    let server = lab.spawn("hB", &["iperf3", "-s", "-1", "-B", "198.51.100.20"]);
    std::thread::sleep(Duration::from_millis(500));
    let client = lab.spawn(
        "hA",
        &[
            "iperf3",
            "-c",
            "198.51.100.20",
            "-t",
            &IPERF_SECONDS.to_string(),
            "-J",
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let frames_before = received(lab, "gA") + received(lab, "gB");
    let times_before = pids.map(cpu_times);
    let counts = perf_stat(&pids);
    let times_after = pids.map(cpu_times);
    let frames = (received(lab, "gA") + received(lab, "gB") - frames_before) as f64;
    let mut out = Vec::new();
    lab.children[client]
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    let _ = lab.children[client].wait();
    let _ = lab.children[server].wait();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    let gbits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    assert!(frames > 0.0, "no frame crossed the gateways");
    let spent = |i: usize| -> f64 {
        (0..2)
            .map(|p| {
                let (before, after) = (times_before[p], times_after[p]);
                if i == 0 {
                    after.0 - before.0
                } else {
                    after.1 - before.1
                }
            })
            .sum()
    };
    PerPacket {
        gbits,
        packets_per_second: frames / MEASURE_SECONDS as f64,
        user_us: spent(0) * 1e6 / frames,
        sys_us: spent(1) * 1e6 / frames,
        events: counts
            .into_iter()
            .map(|(event, n)| {
                // perf gives task-clock in milliseconds.
                let n = if event == "task-clock" { n * 1e3 } else { n };
                (event, n / frames)
            })
            .collect(),
    }
}

/// A gateway configuration of the lab: BYPASS everything, or ESP keyed
/// by IKE; `pipeline` as in [`common::ike`].
#[derive(Clone, Copy)]
struct Row {
    label: &'static str,
    tag: &'static str,
    ike: bool,
    pipeline: &'static str,
}

const ROWS: [Row; 3] = [
    Row {
        label: "BYPASS, two workers",
        tag: "bypass",
        ike: false,
        pipeline: common::ike::WORKERS,
    },
    Row {
        label: "BYPASS, run to completion",
        tag: "bypass-rtc",
        ike: false,
        pipeline: RUN_TO_COMPLETION,
    },
    Row {
        label: "ESP AES-GCM-128 (IKE), run to completion",
        tag: "esp-rtc",
        ike: true,
        pipeline: RUN_TO_COMPLETION,
    },
];

/// Starts both gateways of `row` with ports sending in `mode`, measures
/// once, stops them.
fn measure_row(lab: &mut Lab, row: Row, mode: &str, run: usize) -> PerPacket {
    let tag = format!("{}-{mode}-{run}", row.tag);
    let bypass = bypass_policy(lab);
    let [(ca, sa), (cb, sb)] = ["a", "b"].map(|side| {
        if row.ike {
            (
                gateway_with(lab, side, &tag, row.pipeline, (Some(PSK), "", start(side))),
                socket_with(lab, side, &tag),
            )
        } else {
            (
                config(lab, side, &bypass, &tag, row.pipeline),
                socket(lab, side, &tag),
            )
        }
    });
    #[cfg(feature = "af-xdp")]
    if mode == AF_XDP {
        for path in [&ca, &cb] {
            let text = std::fs::read_to_string(path).unwrap();
            std::fs::write(
                path,
                text.replace(r#""type": "af_packet""#, r#""type": "af_xdp""#),
            )
            .unwrap();
        }
    }
    let exe = env!("CARGO_BIN_EXE_bitsgw");
    let af_packet_mode = if MODES[..3].contains(&mode) {
        mode
    } else {
        "batch"
    };
    let variable = format!("{}={af_packet_mode}", bitsgw_io::SEND_MODE_VARIABLE);
    let gb = lab.spawn("gB", &["env", &variable, exe, "run", cb.to_str().unwrap()]);
    wait_for(&sb);
    let ga = lab.spawn("gA", &["env", &variable, exe, "run", ca.to_str().unwrap()]);
    wait_for(&sa);
    if row.ike {
        tunnel_up(lab);
    }
    let measured = measure(lab, ga, gb);
    lab.terminate(ga);
    lab.terminate(gb);
    measured
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Each figure's median over `runs` on its own.
fn medians(runs: &[PerPacket]) -> PerPacket {
    let of = |f: &dyn Fn(&PerPacket) -> f64| median(runs.iter().map(f).collect());
    PerPacket {
        gbits: of(&|r| r.gbits),
        packets_per_second: of(&|r| r.packets_per_second),
        sys_us: of(&|r| r.sys_us),
        user_us: of(&|r| r.user_us),
        events: EVENTS
            .iter()
            .map(|e| {
                let e = (*e).to_string();
                let m = of(&|r| r.events.get(&e).copied().unwrap_or(0.0));
                (e, m)
            })
            .collect(),
    }
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
#[ignore = "a benchmark: make bench-syscalls"]
fn kernel_time_and_system_calls_per_packet() {
    if !is_root() {
        eprintln!("bench-syscalls skipped: it needs root (network namespaces, perf)");
        return;
    }
    for program in ["perf", "iperf3"] {
        if !has(program) {
            eprintln!("bench-syscalls skipped: {program} is not installed");
            return;
        }
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut lab = Lab::new("ek", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab, true);
    router_answers_for_gateways(&lab);
    let mut table = Vec::new();
    for row in ROWS {
        let mut by_mode: Vec<Vec<PerPacket>> = vec![Vec::new(); MODES.len()];
        for run in 0..runs() {
            for (m, mode) in MODES.iter().enumerate() {
                by_mode[m].push(measure_row(&mut lab, row, mode, run));
            }
        }
        table.push((
            row.label,
            by_mode.iter().map(|r| medians(r)).collect::<Vec<_>>(),
        ));
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nbench-syscalls: both gateways, per frame received, iperf3 TCP (host MTU 1400), median of {} runs of {MEASURE_SECONDS} s; load {} (before) / {} (after)",
        runs(),
        load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        load_after.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    let short = |e: &str| {
        e.trim_start_matches("syscalls:sys_enter_")
            .trim_start_matches("raw_syscalls:sys_enter")
            .to_string()
    };
    let event_names: Vec<String> = EVENTS
        .iter()
        .map(|e| match short(e).as_str() {
            "" => "syscalls".to_string(),
            "task-clock" => "task µs".to_string(),
            "context-switches" => "ctx sw".to_string(),
            s => s.to_string(),
        })
        .collect();
    for (label, modes) in &table {
        println!("\n{label}");
        print!(
            "{:<20} {:>7} {:>9} {:>8} {:>8}",
            "send mode", "Gbit/s", "kpkt/s", "sys µs", "user µs"
        );
        for name in &event_names {
            print!(" {name:>9}");
        }
        println!();
        for (mode, r) in MODES.iter().zip(modes) {
            print!(
                "{mode:<20} {:>7.3} {:>9.1} {:>8.3} {:>8.3}",
                r.gbits,
                r.packets_per_second / 1e3,
                r.sys_us,
                r.user_us
            );
            for e in EVENTS {
                print!(" {:>9.4}", r.events.get(e).copied().unwrap_or(0.0));
            }
            println!();
        }
        let (per_frame, batch, bypass) = (&modes[0], &modes[1], &modes[2]);
        let calls = |r: &PerPacket| r.events["raw_syscalls:sys_enter"];
        println!(
            "batch / per-frame: system time {:.2}, system calls {:.2}, Gbit/s {:.2}; qdisc bypass / batch: system time {:.2}, Gbit/s {:.2}",
            batch.sys_us / per_frame.sys_us,
            calls(batch) / calls(per_frame),
            batch.gbits / per_frame.gbits,
            bypass.sys_us / batch.sys_us,
            bypass.gbits / batch.gbits,
        );
        #[cfg(feature = "af-xdp")]
        println!(
            "AF_XDP / AF_PACKET batch: system time {:.2}, system calls {:.2}, Gbit/s {:.2}",
            modes[3].sys_us / batch.sys_us,
            calls(&modes[3]) / calls(batch),
            modes[3].gbits / batch.gbits,
        );
    }
    println!("(per frame received by either gateway; task µs: perf's task-clock; the system call columns count calls)");
    for (label, modes) in &table {
        for (mode, r) in MODES.iter().zip(modes) {
            assert!(r.gbits > 0.0, "{label}, {mode}: no throughput");
        }
    }
}
