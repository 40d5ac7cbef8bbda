//! Layer 2 fails closed, live (issue 16): host A and host B behind a
//! bitsgw gateway each (inline, AF_PACKET ports on veth pairs; A hands
//! frames to workers, B runs to completion), the gateways joined by a
//! VLAN-unaware bridge that forwards tagged frames as they are. Host A
//! sends raw frames carrying IPv4 of the protected flow (site A to site B
//! of `policies/site-to-site-{a,b}.json`) in 802.1Q, 802.1ad QinQ,
//! `0x9100`, LLC/SNAP, PPPoE session and MPLS framing; the same cleartext
//! is injected on the wire toward gateway A. Captured on both bridge ports
//! and on both hosts: no test string crosses the wire in clear; 802.1Q
//! and QinQ frames cross as ESP behind their tags and reach host B with
//! them; nothing injected reaches host A; the rest is counted by EtherType.
//!
//! Needs root (CI runs as root) and iproute2. Everything it creates it
//! removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitsgw_wire::craft::ip_packet;
use common::{bitsgw, capture, gateway_socket as socket, start_gateways, Lab};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HOST_A: &str = "192.0.2.10";
const HOST_B: &str = "198.51.100.20";

fn build(lab: &Lab) {
    common::link_two_sites(lab);
    lab.exec("r", &["ip", "link", "add", "br0", "type", "bridge"]);
    for dev in ["ra", "rb"] {
        lab.exec("r", &["ip", "link", "set", dev, "master", "br0"]);
    }
    lab.exec("r", &["ip", "link", "set", "br0", "up"]);
}

fn mac(text: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, part) in m.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    m
}

/// An IPv4 UDP packet from `src` to `dst` carrying `text`.
fn udp(src: &str, dst: &str, text: &str) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&40000u16.to_be_bytes());
    u[2..4].copy_from_slice(&9u16.to_be_bytes());
    u[4..6].copy_from_slice(&u16::try_from(8 + text.len()).unwrap().to_be_bytes());
    u.extend_from_slice(text.as_bytes());
    ip_packet(
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
        17,
        &u,
        true,
    )
}

const C_TAG: [u8; 4] = [0x81, 0x00, 0x20, 0x0a];
const S_TAG: [u8; 4] = [0x88, 0xa8, 0x00, 0x64];

/// The encapsulations: name, what stands between the MACs and the IPv4
/// packet, and whether bitsgw processes the IP inside (else it is dropped
/// and counted under the JSON key given).
fn encapsulations(ip_len: usize) -> Vec<(&'static str, Vec<u8>, Result<(), &'static str>)> {
    let snap_len = u16::try_from(8 + ip_len).unwrap().to_be_bytes();
    let ppp_len = u16::try_from(2 + ip_len).unwrap().to_be_bytes();
    vec![
        ("dot1q", [&C_TAG[..], &[0x08, 0x00]].concat(), Ok(())),
        ("qinq", [&S_TAG[..], &C_TAG, &[0x08, 0x00]].concat(), Ok(())),
        (
            "x9100",
            [&[0x91, 0x00, 0x00, 0x64][..], &C_TAG, &[0x08, 0x00]].concat(),
            Err("0x9100"),
        ),
        (
            "llcsnap",
            [&snap_len[..], &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]].concat(),
            Err("llc"),
        ),
        (
            "pppoe",
            [
                &[0x88, 0x64, 0x11, 0x00, 0x12, 0x34][..],
                &ppp_len,
                &[0x00, 0x21],
            ]
            .concat(),
            Err("0x8864"),
        ),
        (
            "mpls",
            vec![0x88, 0x47, 0x00, 0x06, 0x41, 0x40],
            Err("0x8847"),
        ),
    ]
}

/// Test strings of a fixed length, so every encapsulation's packet is the
/// same size.
fn leak_text(name: &str) -> String {
    format!("L2-LEAK-{name:-<8}")
}

fn inject_text(name: &str) -> String {
    format!("L2-INJECT-{name:-<8}")
}

fn contains(frame: &[u8], text: &str) -> bool {
    frame.windows(text.len()).any(|w| w == text.as_bytes())
}

/// Sends `frames` on `dev` in namespace `ns` from an AF_PACKET socket.
fn send(ns: &str, dev: &'static str, frames: &[Vec<u8>]) {
    let port = bitsgw_io::netns::run_in(ns, move || bitsgw_io::af_packet(dev))
        .unwrap()
        .unwrap();
    let mut tx = port.tx;
    for f in frames {
        tx.send(f).unwrap();
        assert_eq!(tx.flush(), 0);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn layer2_encapsulations_never_carry_protected_traffic_in_clear() {
    let mut lab = Lab::new("l2", &["hA", "gA", "r", "gB", "hB"]);
    build(&lab);
    let (mac_a, mac_b) = (mac(&lab.mac("hA", "eth0")), mac(&lab.mac("hB", "eth0")));
    let stop = Arc::new(AtomicBool::new(false));
    let (wire, at_a, at_b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let caps = [
        capture(lab.ns("r"), "ra", Arc::clone(&stop), Arc::clone(&wire)),
        capture(lab.ns("r"), "rb", Arc::clone(&stop), Arc::clone(&wire)),
        capture(lab.ns("hA"), "eth0", Arc::clone(&stop), Arc::clone(&at_a)),
        capture(lab.ns("hB"), "eth0", Arc::clone(&stop), Arc::clone(&at_b)),
    ];
    let (gw_a, gw_b) = start_gateways(&mut lab);
    std::thread::sleep(Duration::from_millis(300));

    let ip_len = udp(HOST_A, HOST_B, &leak_text("x")).len();
    let encaps = encapsulations(ip_len);
    // Host A to host B, and cleartext of B's flow to A injected on the
    // wire in front of gateway A; each frame three times.
    let mut from_host = Vec::new();
    let mut from_wire = Vec::new();
    for (name, between, _) in &encaps {
        let out = udp(HOST_A, HOST_B, &leak_text(name));
        let inj = udp(HOST_B, HOST_A, &inject_text(name));
        let f = [&mac_b[..], &mac_a, between, &out].concat();
        let g = [&mac_a[..], &mac_b, between, &inj].concat();
        for _ in 0..3 {
            from_host.push(f.clone());
            from_wire.push(g.clone());
        }
    }
    send(&lab.ns("hA"), "eth0", &from_host);
    send(&lab.ns("r"), "ra", &from_wire);
    std::thread::sleep(Duration::from_millis(500));

    let counters = |side: &str| -> serde_json::Value {
        let sock = socket(&lab, side);
        let out = bitsgw(&[
            "show",
            "counters",
            "--json",
            "--socket",
            sock.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let c_a = counters("a");
    let text_a = bitsgw(&[
        "show",
        "counters",
        "--socket",
        socket(&lab, "a").to_str().unwrap(),
    ]);
    let text_a = String::from_utf8_lossy(&text_a.stdout).into_owned();
    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }

    let wire = wire.lock().unwrap();
    let at_a = at_a.lock().unwrap();
    let at_b = at_b.lock().unwrap();
    let mut problems = Vec::new();
    for (name, between, outcome) in &encaps {
        let (leak, inj) = (leak_text(name), inject_text(name));
        let header = [&mac_b[..], &mac_a, between].concat();
        let from_a = |f: &&Vec<u8>| f.starts_with(&header) && contains(f, &leak);
        // The injected cleartext on the wire is the test's own; only what
        // host A sent must never be there in clear.
        if wire.iter().any(|f| contains(f, &leak)) {
            problems.push(format!("{name}: the test string crossed the wire in clear"));
        }
        if at_a.iter().any(|f| contains(f, &inj)) {
            problems.push(format!("{name}: injected cleartext reached host A"));
        }
        match outcome {
            Ok(()) => {
                let tags = &header[..header.len() - 2];
                let esp = wire
                    .iter()
                    .filter(|f| {
                        f.starts_with(tags)
                            && f[tags.len()..].starts_with(&[0x08, 0x00])
                            && f.get(tags.len() + 2 + 9) == Some(&50)
                    })
                    .count();
                if esp < 3 {
                    problems.push(format!(
                        "{name}: {esp} ESP frames behind the tags on the wire"
                    ));
                }
                if at_b.iter().filter(from_a).count() < 3 {
                    problems.push(format!(
                        "{name}: host B got fewer than 3 frames with their tags"
                    ));
                }
            }
            Err(key) => {
                if at_b.iter().any(|f| contains(f, &leak)) {
                    problems.push(format!("{name}: reached host B"));
                }
                // Three from the host, three from the wire.
                let n = c_a["layer2_dropped"][key].as_u64().unwrap_or(0);
                if n != 6 {
                    problems.push(format!("{name}: gateway A counted {n} drops under {key}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\ncounters of A:\n{text_a}"
    );
    assert!(
        text_a.contains("non-IP frames dropped by EtherType") && text_a.contains("0x9100 6"),
        "{text_a}"
    );
    assert_eq!(c_a["drops"]["layer2"], 24, "{c_a}");
}
