//! Queues mode over real veths: a gateway runs two receive queues per
//! port (PACKET_FANOUT groups: the host side steered by the outbound SPD or
//! spread by the kernel's flow hash, the network side steered by SPI)
//! between a host side and a peer side in a
//! namespace the test creates, with traffic over several SAs both ways.
//! Every packet is delivered, only ESP crosses the network side, no (SPI,
//! sequence number) leaves twice, both queues take part and their
//! counters add up to what was sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitsgw_io::{netns, Fanout, OnLinkLoss};
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_pipeline::port::Port;
use bitsgw_pipeline::runner::{self, QueueConfig, QueuePorts};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use common::{
    between_gateways, bitsgw, gateway_socket, iperf3, is_root, lab_with_captures, must,
    start_gateways_with, Lab,
};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// SA pairs, one host pair each.
const FLOWS: u8 = 8;
/// Source ports per host pair outbound (flows the kernel hashes apart).
const PORTS: u16 = 8;
/// Packets per source port and host pair.
const ROUNDS: u16 = 20;

fn host_a(f: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + f)
}

fn host_b(f: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + f)
}

/// Gateway A's policy (`a`) or its peer's: one SA pair per host pair, in
/// tunnel mode between 203.0.113.1 and .2, each SA with its own key.
fn policy(a: bool) -> String {
    let (me_out, peer_out) = if a {
        ("203.0.113.1", "203.0.113.2")
    } else {
        ("203.0.113.2", "203.0.113.1")
    };
    let (mut out, mut inb, mut sad) = (Vec::new(), Vec::new(), Vec::new());
    for f in 0..FLOWS {
        let (me, peer) = if a {
            (host_a(f), host_b(f))
        } else {
            (host_b(f), host_a(f))
        };
        let (spi_out, spi_in) = if a {
            (0x1000 + u32::from(f), 0x2000 + u32::from(f))
        } else {
            (0x2000 + u32::from(f), 0x1000 + u32::from(f))
        };
        out.push(format!(
            r#"{{"name": "out-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-out-{f}"}}"#
        ));
        inb.push(format!(
            r#"{{"name": "in-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-in-{f}"}}"#
        ));
        for (name, dir, spi) in [
            (format!("sa-out-{f}"), "outbound", spi_out),
            (format!("sa-in-{f}"), "inbound", spi_in),
        ] {
            // The SPI names the key: 16 octets and the salt.
            let key = format!("{spi:08x}00112233445566778899aabbccddeeff");
            sad.push(format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
                    "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}},
                    "transform": "aes-gcm-128", "enc_key": "0x{key}"}}"#
            ));
        }
    }
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true,
            "spd": {{"outbound": [{}, {{"name": "rest", "action": "discard"}}],
                     "inbound": [{}, {{"name": "rest", "action": "discard"}}]}},
            "sad": [{}]}}"#,
        out.join(","),
        inb.join(","),
        sad.join(",")
    )
}

fn stage(a: bool) -> IpsecStage {
    let set = parse_policy(&policy(a), "queues.json").unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn ether(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

/// Sends `frames` on `port`, a few at a time so no ring overflows.
fn send_all(port: &mut Port, frames: &[Vec<u8>]) {
    for chunk in frames.chunks(32) {
        for f in chunk {
            port.tx.send(f).unwrap();
        }
        assert_eq!(port.tx.flush(), 0);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// IPv4 frames `port` receives until `want` came or nothing came for a
/// while.
fn receive(port: &mut Port, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = PacketBuf::new();
    let mut quiet = Instant::now();
    while got.len() < want && quiet.elapsed() < Duration::from_secs(3) {
        if port.rx.recv(&mut buf).unwrap() {
            if buf.data().get(12..14) == Some(&[0x08, 0x00]) {
                got.push(buf.data().to_vec());
            }
            quiet = Instant::now();
        }
    }
    got
}

/// The host side steered by the SPD: every frame reaches its SA's owner
/// and none is handed over.
#[test]
fn two_queues_carry_several_sas_both_ways_steered_to_their_owners() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let handed_over = two_queues_both_ways("fqs", Fanout::ByRules);
    assert_eq!(handed_over, 0);
}

/// The host side spread by the kernel's flow hash, which knows nothing of
/// owners: some flows reach the queue that does not own their SA and are
/// handed over, and still each SA is sealed by its owner alone.
#[test]
fn two_queues_carry_several_sas_both_ways_handing_over_by_flow_hash() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let handed_over = two_queues_both_ways("fqh", Fanout::FlowHash);
    assert!(handed_over > 0);
}

/// Runs the lab with the host side's group spread as `host_fanout` says;
/// how many frames were handed over outbound.
fn two_queues_both_ways(tag: &str, host_fanout: Fanout) -> u64 {
    let lab = Lab::new(tag, &["h", "g"]);
    lab.link("h", "hh", "g", "host");
    lab.link("h", "pw", "g", "wan");
    lab.up("h", &["hh", "pw"], false);
    lab.up("g", &["host", "wan"], false);
    let (g, h) = (lab.ns("g"), lab.ns("h"));
    let (host_q, wan_q) = netns::run_in(&g, || {
        (
            bitsgw_io::af_packet_fanout("host", OnLinkLoss::Fail, 2, host_fanout),
            bitsgw_io::af_packet_fanout("wan", OnLinkLoss::Fail, 2, Fanout::BySpi),
        )
    })
    .unwrap();
    let queues: Vec<QueuePorts> = host_q
        .unwrap()
        .into_iter()
        .zip(wan_q.unwrap())
        .map(|((host, _), (network, _))| QueuePorts { host, network })
        .collect();
    let (hosts, peer) = netns::run_in(&h, || {
        (bitsgw_io::af_packet("hh"), bitsgw_io::af_packet("pw"))
    })
    .unwrap();
    let (mut hosts, mut peer) = (hosts.unwrap(), peer.unwrap());
    // An inbox of a batch per frame handed over can never be full,
    // however the queues are scheduled on a loaded machine.
    let running = runner::start_queues(
        &QueueConfig { inbox_depth: 2048 },
        queues,
        &|| stage(true),
        &|_| None,
        &|_| {},
        None,
    );
    // Give the first queue a moment to set the steering program.
    std::thread::sleep(Duration::from_millis(100));

    // Inbound: the peer seals for every SA; the hosts get it all in clear.
    let mut b = stage(false);
    let mut sealed = Vec::new();
    for n in 0..ROUNDS * 4 {
        for f in 0..FLOWS {
            let ip = udp_packet(IpAddr::V4(host_b(f)), IpAddr::V4(host_a(f)), 4000, n, 100);
            let mut buf = PacketBuf::from_slice(&ip);
            assert_eq!(
                b.handle_outbound(&mut buf, Timestamp::ZERO),
                Disposition::Forward
            );
            sealed.push(ether(buf.data()));
        }
    }
    let inbound = sealed.len();
    send_all(&mut peer, &sealed);
    let clear = receive(&mut hosts, inbound);
    assert_eq!(clear.len(), inbound, "every inbound packet delivered");
    assert!(clear.iter().all(|f| f[14 + 9] == 17), "plaintext UDP");
    let after_in = running.report(Duration::from_secs(2));
    // Steered by SPI: each ESP frame reached its SA's owner directly.
    assert_eq!(after_in.pipeline.handed_over, 0, "{:?}", after_in.pipeline);
    assert_eq!(after_in.stage.inbound_decrypted, inbound as u64);
    let net_rx: Vec<u64> = after_in.by_worker.iter().map(|c| c.net_rx.frames).collect();
    assert_eq!(net_rx.len(), 2);
    assert!(
        net_rx.iter().all(|n| *n > 0),
        "both queues took ESP: {net_rx:?}"
    );
    assert_eq!(net_rx.iter().sum::<u64>(), inbound as u64);

    // Outbound: many flows over every SA, spread by the kernel's hash.
    let mut plain = Vec::new();
    for n in 0..ROUNDS {
        for port in 0..PORTS {
            for f in 0..FLOWS {
                plain.push(ether(&udp_packet(
                    IpAddr::V4(host_a(f)),
                    IpAddr::V4(host_b(f)),
                    5000 + port,
                    n,
                    100,
                )));
            }
        }
    }
    let outbound = plain.len();
    send_all(&mut hosts, &plain);
    let wire = receive(&mut peer, outbound);
    assert_eq!(wire.len(), outbound, "every outbound packet delivered");
    let mut pairs = HashSet::new();
    for f in &wire {
        let ip = &f[14..];
        assert_eq!(
            ip[9],
            50,
            "only ESP on the network side: {:02x?}",
            &ip[..20]
        );
        assert_eq!(&ip[12..20], &[203, 0, 113, 1, 203, 0, 113, 2]);
        let spi = u32::from_be_bytes(ip[20..24].try_into().unwrap());
        let seq = u32::from_be_bytes(ip[24..28].try_into().unwrap());
        assert!(
            pairs.insert((spi, seq)),
            "SPI {spi:#x} sequence {seq} twice"
        );
        // The peer opens it: the right key, in the window.
        let mut buf = PacketBuf::from_slice(ip);
        assert_eq!(
            b.handle_inbound(&mut buf, Timestamp::ZERO),
            Disposition::Deliver
        );
    }
    let (report, failure) = running.stop();
    assert_eq!(failure, None);
    assert_every_outbound_packet_protected(&report, outbound);
    // Each SA reported once, by its owner.
    let names: HashSet<_> = report.sas.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names.len(), usize::from(FLOWS) * 2);
    assert_eq!(report.sas.len(), usize::from(FLOWS) * 2);
    report.pipeline.handed_over
}

/// The appliance with `"pipeline": "queues"`: gateway A runs two queues
/// per port between the two sites (gateway B runs to completion); ping
/// and a TCP transfer cross over ESP only, a reload re-steers the groups
/// and traffic flows on, and A's counters show its queues and no frame
/// handed over (one SA pair, steered to its owner both ways).
#[test]
fn the_appliance_runs_two_queues_between_two_sites() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let (mut lab, stop, seen, caps) = lab_with_captures("fqa");
    let (gw_a, _gw_b) = start_gateways_with(
        &mut lab,
        serde_json::json!({"workers": 2, "pipeline": "queues"}),
    );
    let ping = |lab: &Lab| {
        let out = lab.try_exec(
            "hA",
            &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.51.100.20"],
        );
        assert!(
            out.status.success(),
            "ping: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    };
    ping(&lab);
    let result = iperf3(&mut lab, "hA", "hB", "198.51.100.20", "2");
    let received = result["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 100_000, "TCP moved only {received} bytes");
    // A reload publishes new owner maps: the first queue steers again.
    must(&["kill", "-HUP", &lab.children[gw_a].id().to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    ping(&lab);

    let sock = gateway_socket(&lab, "a");
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
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v;
    assert_eq!(c["handed_over"], 0, "{c}");
    assert!(
        c["ipsec"]["outbound_protected"].as_u64().unwrap() > 100,
        "{c}"
    );
    assert!(
        c["ipsec"]["inbound_decrypted"].as_u64().unwrap() > 100,
        "{c}"
    );
    stop.store(true, Ordering::SeqCst);
    for cap in caps {
        cap.join().unwrap();
    }
    let (esp, _) = between_gateways(&seen.lock().unwrap());
    assert!(esp > 200, "{esp} ESP frames between the gateways");
}

/// Queues on TUN ports: gateway A's two queues on a multi-queue TUN
/// device each side, in a namespace whose own stack is both the hosts
/// (UDP sockets on host A's addresses, host B's routed into the host
/// device) and the peer (the network device's far end). The kernel
/// spreads the hosts' flows over both host queues by its flow hash;
/// every packet is read once, protected by its SA's owner (handed over
/// when another queue read it) and written into the network device,
/// which the kernel takes whole: nothing dropped, nothing lost.
#[test]
fn two_queues_on_multi_queue_tun_devices_carry_every_flow() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let lab = Lab::new("fqt", &["g"]);
    let g = lab.ns("g");
    let (host_q, wan_q) = netns::run_in(&g, || {
        (
            bitsgw_io::tun_queues("host", 2),
            bitsgw_io::tun_queues("wan", 2),
        )
    })
    .unwrap();
    let queues: Vec<QueuePorts> = host_q
        .unwrap()
        .into_iter()
        .zip(wan_q.unwrap())
        .map(|(host, network)| QueuePorts { host, network })
        .collect();
    // No IPv6 (router solicitations would be discarded, and counted).
    lab.up("g", &["host", "wan"], false);
    for f in 0..FLOWS {
        lab.exec(
            "g",
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", host_a(f)),
                "dev",
                "host",
            ],
        );
    }
    lab.exec(
        "g",
        &["ip", "route", "add", "198.51.100.0/24", "dev", "host"],
    );
    // The ESP written into the network device is for no local address
    // and the namespace does not forward: the stack drops it, silently.
    lab.exec("g", &["ip", "route", "add", "203.0.113.0/24", "dev", "wan"]);
    let running = runner::start_queues(
        &QueueConfig { inbox_depth: 2048 },
        queues,
        &|| stage(true),
        &|_| None,
        &|_| {},
        None,
    );
    let sockets: Vec<(u8, std::net::UdpSocket)> = (0..FLOWS)
        .flat_map(|f| (0..PORTS).map(move |_| f))
        .map(|f| {
            let bound = netns::run_in(&g, || std::net::UdpSocket::bind((IpAddr::V4(host_a(f)), 0)))
                .unwrap()
                .unwrap();
            (f, bound)
        })
        .collect();
    for _ in 0..ROUNDS {
        for chunk in sockets.chunks(32) {
            for (f, s) in chunk {
                s.send_to(b"over a TUN queue", (IpAddr::V4(host_b(*f)), 5000))
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let outbound = sockets.len() * usize::from(ROUNDS);
    let written = || -> usize {
        lab.exec("g", &["cat", "/sys/class/net/wan/statistics/rx_packets"])
            .trim()
            .parse()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while written() < outbound && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Read before the devices go with the stopped queues' ports.
    let taken = written();
    let (report, failure) = running.stop();
    assert_eq!(failure, None);
    assert_eq!(taken, outbound, "ESP the kernel took from the queues");
    assert_every_outbound_packet_protected(&report, outbound);
}

/// The queues' final report after `outbound` packets from the hosts:
/// nothing dropped, every packet read once by some queue (both took
/// part), protected and sent.
fn assert_every_outbound_packet_protected(report: &runner::Report, outbound: usize) {
    assert_eq!(report.stage.total_drops(), 0, "{:?}", report.stage);
    assert_eq!(report.pipeline.total_drops(), 0, "{:?}", report.pipeline);
    assert_eq!(report.stage.outbound_protected, outbound as u64);
    let host_rx: Vec<u64> = report.by_worker.iter().map(|c| c.host_rx.frames).collect();
    assert!(
        host_rx.iter().all(|n| *n > 0),
        "both queues took flows: {host_rx:?}"
    );
    assert_eq!(host_rx.iter().sum::<u64>(), outbound as u64);
    let net_tx: u64 = report.by_worker.iter().map(|c| c.net_tx.frames).sum();
    assert_eq!(net_tx, outbound as u64);
}
