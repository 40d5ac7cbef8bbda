//! Two unmodified hosts in network namespaces with a bitsgw gateway inline
//! in front of each (veth pairs, AF_PACKET ports) and a router between the
//! gateways (A hands frames to workers, B runs to completion): ping and a
//! TCP transfer go through ESP tunnel mode, the wire
//! between the gateways carries only ESP (captured on the router), `show`
//! and `ctl` work against the running appliances, and removing a
//! gateway's SA stops the traffic rather than leaking it in clear.
//!
//! Needs root (CI runs as root), iproute2, iputils-ping, ethtool and iperf3
//! (`scripts/setup-test-deps.sh`). Everything it creates it removes, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    bitsgw, gateway_config, gateway_socket as socket, iperf3, lab_with_captures, must,
    start_gateways, Lab,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn two_gateways_inline_carry_ping_and_tcp_over_esp_only() {
    let (mut lab, stop, seen, caps) = lab_with_captures("l");
    let (gw_a, gw_b) = start_gateways(&mut lab);

    // Ping across.
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // A TCP transfer.
    let result = iperf3(&mut lab, "hA", "hB", "198.51.100.20", "2");
    let received = result["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 100_000, "TCP moved only {received} bytes");

    // SIGHUP reloads the policies; the unchanged SAs keep their state and
    // traffic flows on.
    let pid_b = lab.children[gw_b].id().to_string();
    must(&["kill", "-HUP", &pid_b]);
    std::thread::sleep(Duration::from_millis(300));
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping after reload: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // B's inbound SA renamed, its SPI kept: `ctl reload` installs it under
    // the new name and traffic flows on (issue 16: the SA went missing).
    let policy_b = lab.dir.join("site-to-site-b.json");
    let renamed = std::fs::read_to_string(&policy_b)
        .unwrap()
        .replace("\"a-to-b-v4\"", "\"from-a-v4\"");
    std::fs::write(&policy_b, renamed).unwrap();
    let sock_b = socket(&lab, "b");
    let reload = bitsgw(&["ctl", "reload", "--socket", sock_b.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert!(said.contains("1 installed, 1 removed"), "{said}");
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping after renaming B's inbound SA: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let sa_b = bitsgw(&["show", "sa", "--socket", sock_b.to_str().unwrap()]);
    let sa_b = String::from_utf8_lossy(&sa_b.stdout);
    assert!(
        sa_b.contains("from-a-v4: inbound spi 0x00003001") && !sa_b.contains("a-to-b-v4"),
        "{sa_b}"
    );

    // show and ctl against the running appliances.
    let sock_a = socket(&lab, "a");
    let out = bitsgw(&["show", "sa", "--json", "--socket", sock_a.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sas: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out_sa = sas
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "a-to-b-v4")
        .unwrap();
    assert!(out_sa["packets"].as_u64().unwrap() > 100, "{out_sa}");
    let text = bitsgw(&["show", "counters", "--socket", sock_a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("outbound_protected"));
    let sp = bitsgw(&["show", "sp", "--socket", sock_a.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&sp.stdout).contains("sites-v4-out"));

    // Remove A's outbound SA: traffic stops, nothing leaks.
    remove_sa(&sock_a, "a-to-b-v4");
    std::thread::sleep(Duration::from_millis(200));
    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.51.100.20"],
    );
    assert!(!ping.status.success(), "ping went through without an SA");
    let counters = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock_a.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    assert!(c["drops"]["no_sa"].as_u64().unwrap() >= 3, "{c}");

    // Stop the gateways: they exit cleanly and print their counters.
    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(out.contains("final counters"), "{out}");
        if gw == gw_b {
            assert!(log.contains("policies reloaded"), "{log}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }

    // Between the gateways: ESP, ARP and nothing else of the hosts'.
    let (esp, _) = common::between_gateways(&seen.lock().unwrap());
    assert!(esp > 200, "only {esp} ESP frames seen");
}

/// `bitsgw ctl remove-sa NAME` against the appliance at `socket`.
fn remove_sa(socket: &std::path::Path, name: &str) {
    let ctl = bitsgw(&[
        "ctl",
        "remove-sa",
        name,
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
}

/// Kills gateway `index` with SIGKILL (no clean-up of any kind) and waits
/// for it.
fn kill_hard(lab: &mut Lab, index: usize) {
    let pid = lab.children[index].id().to_string();
    must(&["kill", "-KILL", &pid]);
    let _ = lab.children[index].wait();
}

/// Starts gateway `side` (again) and waits for its control socket.
fn start(lab: &mut Lab, side: &str) -> usize {
    let cfg = gateway_config(lab, side);
    let _ = std::fs::remove_file(socket(lab, side));
    let ns = if side == "a" { "gA" } else { "gB" };
    let gw = lab.spawn(
        ns,
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    lab.wait_ready(gw, &socket(lab, side));
    gw
}

/// Pings from A's host to B's with a payload `pattern`; asserts replies.
fn ping_through(lab: &Lab, pattern: &str, after: &str) {
    let ping = lab.try_exec(
        "hA",
        &[
            "ping",
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "2",
            "-p",
            pattern,
            "198.51.100.20",
        ],
    );
    assert!(
        ping.status.success(),
        "ping after {after}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

/// Asserts that gateway `side` has dropped no packet as a replay since it
/// started.
fn assert_no_replay_drops(lab: &Lab, side: &str, after: &str) {
    let sock = socket(lab, side);
    let out = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in ["replay_duplicate", "replay_too_old"] {
        assert_eq!(c["drops"][k].as_u64(), Some(0), "{side} after {after}: {k}");
    }
}

/// Issue 16: with static AES-GCM keys a restarted gateway used to send
/// sequence numbers 1, 2, ... again under the same key (reused nonces) and
/// the peer dropped them as replays. Now the sequence numbers are leased
/// in the state directory: across a clean restart, a SIGKILL and restart
/// (of A, which hands frames to workers, and of B, which runs to
/// completion), and an SA removed and re-added by a reload, every (SPI,
/// sequence number) on the wire is unique and the peer accepts the
/// traffic at once.
#[test]
fn restarts_and_re_added_sas_never_repeat_a_sequence_number() {
    let (mut lab, stop, seen, caps) = lab_with_captures("n");
    let mut gw_a = start(&mut lab, "a");
    let mut gw_b = start(&mut lab, "b");
    ping_through(&lab, "aa", "the start");

    let (ok, out, log) = lab.terminate(gw_a);
    assert!(ok, "{out}{log}");
    gw_a = start(&mut lab, "a");
    ping_through(&lab, "bb", "a clean restart of A");
    assert_no_replay_drops(&lab, "b", "a clean restart of A");

    kill_hard(&mut lab, gw_a);
    gw_a = start(&mut lab, "a");
    ping_through(&lab, "cc", "SIGKILL and restart of A");
    assert_no_replay_drops(&lab, "b", "SIGKILL and restart of A");

    kill_hard(&mut lab, gw_b);
    gw_b = start(&mut lab, "b");
    ping_through(&lab, "dd", "SIGKILL and restart of B");
    assert_no_replay_drops(&lab, "a", "SIGKILL and restart of B");

    // Remove A's outbound SA, then reload: the SA comes back with the same
    // key and continues above everything it leased before.
    let sock_a = socket(&lab, "a");
    remove_sa(&sock_a, "a-to-b-v4");
    let pid_a = lab.children[gw_a].id().to_string();
    must(&["kill", "-HUP", &pid_a]);
    std::thread::sleep(Duration::from_millis(300));
    ping_through(&lab, "ee", "remove-sa and reload on A");
    assert_no_replay_drops(&lab, "b", "remove-sa and reload on A");

    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "{out}{log}");
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }

    let frames = seen.lock().unwrap();
    let mut pairs = std::collections::HashMap::new();
    let mut per_spi = std::collections::BTreeMap::new();
    for f in frames.iter() {
        if f.len() < 14 + 20 || u16::from_be_bytes([f[12], f[13]]) != 0x0800 {
            continue;
        }
        let ip = &f[14..];
        if ip[9] != 50 {
            continue;
        }
        let esp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let spi = u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]);
        let seq = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        *per_spi.entry(spi).or_insert(0u32) += 1;
        if let Some(n) = pairs.insert((spi, seq), 1u32) {
            panic!("SPI {spi:#x} sequence number {seq} sent twice ({n} before)");
        }
    }
    // Both directions carried the pings of all five phases.
    assert_eq!(per_spi.len(), 2, "{per_spi:?}");
    assert!(per_spi.values().all(|n| *n >= 25), "{per_spi:?}");
}

/// `GET /metrics` on gateway A's metrics endpoint, from inside its
/// namespace: the status line and the body.
fn scrape(ns: &str) -> (String, String) {
    use std::io::{Read, Write};
    let raw = bitsgw_io::netns::run_in(ns, || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9474")?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok::<_, std::io::Error>(out)
    })
    .unwrap()
    .unwrap_or_else(|e| format!("error: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// A scrape's samples: metric name, labels, value.
type Samples = Vec<(String, std::collections::BTreeMap<String, String>, f64)>;

fn samples(text: &str) -> Samples {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (s.metric, labels, v)
        })
        .collect()
}

/// The value of the one sample of `metric` with `labels` (among others).
fn value(s: &Samples, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let found: Vec<f64> = s
        .iter()
        .filter(|(m, l, _)| {
            m == metric
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    found[0] as u64
}

fn show_json(sock: &std::path::Path, what: &str) -> serde_json::Value {
    let out = bitsgw(&["show", what, "--json", "--socket", sock.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `show` before and after a scrape, as JSON.
struct Shown {
    counters: serde_json::Value,
    sas: serde_json::Value,
    spd: serde_json::Value,
}

fn shown(sock: &std::path::Path) -> Shown {
    Shown {
        counters: show_json(sock, "counters"),
        sas: show_json(sock, "sa"),
        spd: show_json(sock, "sp"),
    }
}

/// Every counter of `show` is in the scrape, between its value before and
/// after it (the counters only rise).
fn check_against_show(s: &Samples, before: &Shown, after: &Shown) {
    let mut checked = 0;
    let mut between = |what: String, x: u64, lo: &serde_json::Value, hi: &serde_json::Value| {
        let (lo, hi) = (lo.as_u64().unwrap(), hi.as_u64().unwrap());
        assert!(lo <= x && x <= hi, "{what}: {lo} <= {x} <= {hi}");
        checked += 1;
    };
    for port in ["host", "network"] {
        for dir in ["rx", "tx"] {
            for what in ["frames", "bytes"] {
                let x = value(
                    s,
                    &format!("bitsgw_port_{what}_total"),
                    &[("port", port), ("direction", dir)],
                );
                let key = format!("{dir}_{what}");
                between(
                    format!("{port} {key}"),
                    x,
                    &before.counters["ports"][port][&key],
                    &after.counters["ports"][port][&key],
                );
            }
        }
    }
    let drops = before.counters["drops"].as_object().unwrap();
    assert!(!drops.is_empty());
    let mut total = 0;
    for (reason, n) in drops {
        let x = value(s, "bitsgw_drops_total", &[("reason", reason)]);
        total += x;
        between(reason.clone(), x, n, &after.counters["drops"][reason]);
    }
    between(
        "drops_total".into(),
        total,
        &before.counters["drops_total"],
        &after.counters["drops_total"],
    );
    let sas = before.sas.as_array().unwrap();
    assert!(!sas.is_empty());
    for (i, sa) in sas.iter().enumerate() {
        let name = sa["name"].as_str().unwrap();
        for (field, metric) in [
            ("packets", "bitsgw_sa_packets_total"),
            ("bytes", "bitsgw_sa_bytes_total"),
            ("replay_drops", "bitsgw_sa_replay_drops_total"),
            ("icv_failures", "bitsgw_sa_icv_failures_total"),
        ] {
            let x = value(s, metric, &[("sa", name)]);
            between(
                format!("{name} {field}"),
                x,
                &sa[field],
                &after.sas[i][field],
            );
        }
        let state = sa["state"].as_str().unwrap();
        assert_eq!(
            value(s, "bitsgw_sa_state", &[("sa", name), ("state", state)]),
            1
        );
    }
    for dir in ["outbound", "inbound"] {
        for (i, e) in before.spd[dir].as_array().unwrap().iter().enumerate() {
            let entry = e["name"].as_str().unwrap();
            let x = value(
                s,
                "bitsgw_spd_hits_total",
                &[("direction", dir), ("entry", entry)],
            );
            between(
                format!("{dir} {entry}"),
                x,
                &e["hits"],
                &after.spd[dir][i]["hits"],
            );
        }
    }
    assert!(checked > 20, "only {checked} values compared");
}

#[test]
fn metrics_endpoint_matches_show_rises_with_traffic_and_outlasts_a_scrape_storm() {
    let mut lab = Lab::new("m", &["hA", "gA", "r", "gB", "hB"]);
    common::route_two_sites(&lab);
    common::start_gateways_with(
        &mut lab,
        serde_json::json!({"metrics": {"listen": "127.0.0.1:9474"}}),
    );
    let ns = lab.ns("gA");
    let sock = socket(&lab, "a");
    let ping = |lab: &Lab, count: &str| {
        lab.try_exec(
            "hA",
            &["ping", "-c", count, "-i", "0.2", "-W", "2", "198.51.100.20"],
        )
    };
    let out = ping(&lab, "3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A scrape between two `show`s: every counter between the two.
    let before = shown(&sock);
    let (status, body) = scrape(&ns);
    let after = shown(&sock);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"));
    let first = samples(&body);
    check_against_show(&first, &before, &after);

    // `show counters --prometheus`: the same families, once.
    let printed = bitsgw(&[
        "show",
        "counters",
        "--prometheus",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert!(printed.status.success());
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        families(&String::from_utf8_lossy(&printed.stdout)),
        families(&body)
    );

    // Traffic: the counters rise (the text is renewed after a second).
    let out = ping(&lab, "5");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = scrape(&ns);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let second = samples(&body);
    let outbound = after
        .sas
        .as_array()
        .unwrap()
        .iter()
        .find(|sa| sa["direction"] == "outbound" && sa["packets"].as_u64() > Some(0))
        .expect("an outbound SA that carried the first pings");
    let name = outbound["name"].as_str().unwrap();
    for (metric, labels) in [
        ("bitsgw_sa_packets_total", vec![("sa", name)]),
        (
            "bitsgw_port_frames_total",
            vec![("port", "host"), ("direction", "rx")],
        ),
        (
            "bitsgw_port_frames_total",
            vec![("port", "network"), ("direction", "tx")],
        ),
        (
            "bitsgw_ipsec_packets_total",
            vec![("direction", "outbound"), ("action", "protected")],
        ),
    ] {
        let (a, b) = (
            value(&first, metric, &labels),
            value(&second, metric, &labels),
        );
        assert!(b >= a + 5, "{metric} {labels:?}: {a} -> {b}");
    }

    // A scrape storm: 300 clients scraping at once, again and again,
    // while a ping crosses the gateway and `show` asks its control socket.
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = (0..300)
        .map(|_| {
            let (ns, stop) = (ns.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) && answers.len() < 20 {
                    answers.push(scrape(&ns).0);
                }
                answers
            })
        })
        .collect();
    let out = ping(&lab, "10");
    let said = String::from_utf8_lossy(&out.stdout);
    for _ in 0..5 {
        let shown = bitsgw(&["show", "counters", "--socket", sock.to_str().unwrap()]);
        assert!(
            shown.status.success(),
            "show during the storm: {}",
            String::from_utf8_lossy(&shown.stderr)
        );
    }
    stop.store(true, Ordering::SeqCst);
    let answers: Vec<String> = storm.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(answers.len() >= 300);
    assert!(
        answers.iter().all(|s| s == "HTTP/1.1 200 OK"),
        "{:?}",
        answers.iter().find(|s| *s != "HTTP/1.1 200 OK")
    );
    assert!(
        out.status.success() && said.contains(" 10 received"),
        "ping during the storm: {said}"
    );
}
