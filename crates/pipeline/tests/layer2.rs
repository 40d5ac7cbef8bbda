//! Layer 2 fails closed (issue 16): an IPv4 packet of a protected flow
//! (site A's `192.0.2.0/24` to site B's `198.51.100.0/24`,
//! `policies/site-to-site-a.json`) in each encapsulation a LAN may carry,
//! replayed through gateway A both ways. Behind 802.1Q and 802.1ad tags it
//! goes through the SPD and leaves as ESP with its tags (and gateway B
//! delivers it with them); in every other encapsulation it is dropped and
//! counted under its EtherType. No frame on the network side carries the
//! test payload in clear, and no cleartext reaches the host side.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{DropReason, IpsecStage, StageConfig};
use bitsgw_pipeline::replay::{self, ReplayInput};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_pipeline::{Gateway, Layer2Policy, LinkType, NoTap, Outcome, PipelineDrop, Side};
use bitsgw_wire::ether::Layer2;
use bitsgw_wire::{ip, Timestamp};
use common::chan::port_of;
use common::*;
use crossbeam_channel::Receiver;

/// What must become of a frame.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// IP behind `header_len` octets of Ethernet header and tags: it goes
    /// through the SPD and keeps the header.
    Ip { header_len: usize },
    /// Dropped and counted under this EtherType.
    Dropped { ethertype: u16 },
}

/// An encapsulation: its name, what comes between the MAC addresses and
/// the IPv4 packet, and what must become of it.
struct Encap {
    name: &'static str,
    between: fn(ip_len: usize) -> Vec<u8>,
    want: Want,
}

const C_TAG: [u8; 4] = [0x81, 0x00, 0x20, 0x0a];
const S_TAG: [u8; 4] = [0x88, 0xa8, 0x00, 0x64];
const IPV4: [u8; 2] = [0x08, 0x00];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn encaps() -> Vec<Encap> {
    vec![
        Encap {
            name: "802.1Q",
            between: |_| cat(&[&C_TAG, &IPV4]),
            want: Want::Ip { header_len: 18 },
        },
        Encap {
            name: "802.1ad QinQ",
            between: |_| cat(&[&S_TAG, &C_TAG, &IPV4]),
            want: Want::Ip { header_len: 22 },
        },
        Encap {
            name: "802.1ad S-tag alone",
            between: |_| cat(&[&S_TAG, &IPV4]),
            want: Want::Ip { header_len: 18 },
        },
        Encap {
            name: "QinQ 0x9100",
            between: |_| cat(&[&[0x91, 0x00, 0x00, 0x64], &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x9100 },
        },
        Encap {
            name: "two 802.1Q tags",
            between: |_| cat(&[&C_TAG, &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x8100 },
        },
        Encap {
            name: "three tags",
            between: |_| cat(&[&S_TAG, &C_TAG, &C_TAG, &IPV4]),
            want: Want::Dropped { ethertype: 0x8100 },
        },
        Encap {
            name: "LLC/SNAP",
            // 802.3 length, LLC DSAP/SSAP 0xaa, UI, SNAP OUI 0 and the
            // EtherType (RFC 1042).
            between: |ip_len| {
                let len = u16::try_from(8 + ip_len).unwrap().to_be_bytes();
                cat(&[&len, &[0xaa, 0xaa, 0x03, 0, 0, 0], &IPV4])
            },
            want: Want::Dropped { ethertype: 0x0030 },
        },
        Encap {
            name: "PPPoE session",
            // RFC 2516 4: version/type, code 0, session, length; PPP
            // protocol 0x0021 (IPv4).
            between: |ip_len| {
                let len = u16::try_from(2 + ip_len).unwrap().to_be_bytes();
                cat(&[&[0x88, 0x64, 0x11, 0x00, 0x12, 0x34], &len, &[0x00, 0x21]])
            },
            want: Want::Dropped { ethertype: 0x8864 },
        },
        Encap {
            name: "MPLS",
            // RFC 3032: label 100, bottom of stack, TTL 64.
            between: |_| vec![0x88, 0x47, 0x00, 0x06, 0x41, 0x40],
            want: Want::Dropped { ethertype: 0x8847 },
        },
        Encap {
            name: "MPLS behind 802.1Q",
            between: |_| cat(&[&C_TAG, &[0x88, 0x47, 0x00, 0x06, 0x41, 0x40]]),
            want: Want::Dropped { ethertype: 0x8847 },
        },
        Encap {
            name: "unknown EtherType",
            between: |_| vec![0x12, 0x34],
            want: Want::Dropped { ethertype: 0x1234 },
        },
    ]
}

/// `ip` in `encap`, as sent from `from`.
fn frame(encap: &Encap, from: Side, ip: &[u8]) -> Vec<u8> {
    let plain = eth(from, ip);
    cat(&[&plain[..12], &(encap.between)(ip.len()), ip])
}

/// Frames out of each side of `gw` for `frames` in from `from`.
fn replay_through(gw: &mut Gateway, from: Side, frames: &[Vec<u8>]) -> replay::ReplayOutput {
    let input = ReplayInput {
        side: from,
        link: LinkType::Ethernet,
        frames: frames
            .iter()
            .enumerate()
            .map(|(i, f)| (Timestamp::from_millis(1_000 + i as u64), f.clone()))
            .collect(),
    };
    replay::run(gw, &[input], Vec::new(), &mut NoTap)
}

/// The threaded pipeline with three workers.
fn three_workers() -> RunnerConfig {
    RunnerConfig {
        workers: 3,
        queue_depth: 1024,
        run_to_completion: false,
    }
}

/// Up to `n` frames from `rx`, waiting at most 10 s for each.
fn collect(rx: &Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(f) => got.push(f),
            Err(_) => break,
        }
    }
    got
}

fn gateway_b() -> Gateway {
    Gateway::new(stage("site-to-site-b.json"))
}

#[test]
fn protected_ipv4_in_every_encapsulation_never_crosses_in_clear() {
    let out_ip = marked_udp(HOST_A, HOST_B, 64, true);
    let in_ip = marked_udp(HOST_B, HOST_A, 64, true);
    let mut problems = Vec::new();
    for encap in encaps() {
        let mut a = gateway_a();
        let mut b = gateway_b();
        let sent = frame(&encap, Side::Host, &out_ip);
        let to_net = replay_through(&mut a, Side::Host, std::slice::from_ref(&sent));
        let cleartext_in = frame(&encap, Side::Network, &in_ip);
        let to_host = replay_through(&mut a, Side::Network, std::slice::from_ref(&cleartext_in));
        let mut problem = |p: String| problems.push(format!("{}: {p}", encap.name));
        if to_net.network.iter().any(|f| carries_mark(&f.1)) {
            problem("the test payload left in clear".into());
        }
        if !to_host.host.is_empty() {
            problem(format!("{} frames injected host-ward", to_host.host.len()));
        }
        match encap.want {
            Want::Ip { header_len } => {
                let [(_, wire)] = &to_net.network[..] else {
                    problem(format!("{} frames to the network", to_net.network.len()));
                    continue;
                };
                if wire[..header_len] != sent[..header_len] {
                    problem("the tags were not kept".into());
                }
                if ip::parse(&wire[header_len..]).map(|m| m.proto).ok() != Some(50) {
                    problem("not ESP after the tags".into());
                }
                // Gateway B decrypts it and delivers it with its tags.
                let delivered = replay_through(&mut b, Side::Network, std::slice::from_ref(wire));
                if delivered.host.iter().map(|f| &f.1).ne([&sent]) {
                    problem(format!("B delivered {:?}", delivered.host));
                }
                // The cleartext A got from the network met the inbound SPD.
                if a.stage().counters().total_drops() != 1 {
                    problem("cleartext from the network was not dropped by the SPD".into());
                }
            }
            Want::Dropped { ethertype } => {
                if !to_net.network.is_empty() {
                    problem(format!("{} frames to the network", to_net.network.len()));
                }
                let c = a.counters();
                if c.drops(PipelineDrop::Layer2) != 2 || c.layer2_dropped.get(ethertype) != 2 {
                    problem(format!(
                        "counted {} layer-2 drops, {} under {ethertype:#06x}",
                        c.drops(PipelineDrop::Layer2),
                        c.layer2_dropped.get(ethertype)
                    ));
                }
                if c.non_ip_passed != 0 {
                    problem("counted as passed".into());
                }
                // A drop of the pipeline's own, not an IPsec one.
                if a.stage().counters().total_drops() != 0 {
                    problem("also counted as an IPsec drop".into());
                }
                let mut buf = bitsgw_wire::PacketBuf::from_slice(&sent);
                let o = a.handle_frame(
                    Side::Host,
                    LinkType::Ethernet,
                    &mut buf,
                    Timestamp::ZERO,
                    &mut |_, _| {},
                    &mut NoTap,
                );
                if o != Outcome::PipelineDrop(PipelineDrop::Layer2) {
                    problem(format!("outcome {o:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn arp_passes_with_or_without_tags_and_other_types_only_when_allowed() {
    let arp = [0u8; 28];
    let untagged = cat(&[&[0xff; 6], &HOST_MAC, &[0x08, 0x06], &arp]);
    let tagged = cat(&[&[0xff; 6], &HOST_MAC, &C_TAG, &[0x08, 0x06], &arp]);
    let qinq = cat(&[&[0xff; 6], &HOST_MAC, &S_TAG, &C_TAG, &[0x08, 0x06], &arp]);
    let lldp = cat(&[
        &[0x01, 0x80, 0xc2, 0, 0, 0x0e],
        &HOST_MAC,
        &[0x88, 0xcc],
        &[0; 32],
    ]);
    let pppoe = frame(
        &encaps()[7],
        Side::Host,
        &marked_udp(HOST_A, HOST_B, 64, true),
    );
    for side in [Side::Host, Side::Network] {
        let mut gw = gateway_a();
        let frames = [untagged.clone(), tagged.clone(), qinq.clone(), lldp.clone()];
        let out = replay_through(&mut gw, side, &frames);
        let passed = match side.other() {
            Side::Host => &out.host,
            Side::Network => &out.network,
        };
        let passed: Vec<&Vec<u8>> = passed.iter().map(|f| &f.1).collect();
        assert_eq!(passed, vec![&untagged, &tagged, &qinq], "{side:?}");
        assert_eq!(gw.counters().non_ip_passed, 3);
        assert_eq!(gw.counters().layer2_dropped.get(0x88cc), 1);

        // Allowed by EtherType: LLDP passes, PPPoE still does not.
        let mut gw = gateway_a();
        gw.set_layer2_policy(Layer2Policy {
            pass_unknown: false,
            allow: vec![0x88cc],
        });
        let out = replay_through(&mut gw, side, &[lldp.clone(), pppoe.clone()]);
        assert_eq!(out.host.len() + out.network.len(), 1, "{side:?}");
        assert_eq!(gw.counters().layer2_dropped.get(0x8864), 1);

        // pass_unknown: the bump is transparent to what it does not parse
        // (the choice `check` warns about).
        let mut gw = gateway_a();
        gw.set_layer2_policy(Layer2Policy {
            pass_unknown: true,
            allow: Vec::new(),
        });
        let out = replay_through(&mut gw, side, std::slice::from_ref(&pppoe));
        assert_eq!(out.host.len() + out.network.len(), 1, "{side:?}");
        assert_eq!(gw.counters().drops(PipelineDrop::Layer2), 0);
    }
}

/// An IPv4 packet that leaves as IPv6 ESP (an IPv4 flow through a tunnel
/// between IPv6 gateways) gets the IPv6 EtherType after its tags.
#[test]
fn the_inner_ethertype_follows_the_outer_family_behind_the_tags() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/site-to-site-a.json"),
    )
    .unwrap();
    let sa = text.find("\"name\": \"a-to-b-v4\"").unwrap();
    let tunnel = sa + text[sa..].find("\"local\": \"gw_a\"").unwrap();
    let end = tunnel + text[tunnel..].find('}').unwrap();
    let v6_tunnel = format!(
        "{}\"local\": \"2001:db8:f::1\", \"remote\": \"2001:db8:f::2\"{}",
        &text[..tunnel],
        &text[end..]
    );
    let mut stage = IpsecStage::new(StageConfig::default());
    parse_policy(&v6_tunnel, "v6-tunnel.json")
        .unwrap()
        .apply(&mut stage, Timestamp::ZERO)
        .unwrap();
    let mut gw = Gateway::new(stage);
    let sent = frame(
        &encaps()[1],
        Side::Host,
        &marked_udp(HOST_A, HOST_B, 64, true),
    );
    let out = replay_through(&mut gw, Side::Host, std::slice::from_ref(&sent));
    let [(_, wire)] = &out.network[..] else {
        panic!("{:?}, drops {:?}", out.network, gw.stage().counters());
    };
    assert_eq!(&wire[..20], &sent[..20], "MACs and both tags kept");
    assert_eq!(&wire[20..22], &[0x86, 0xdd]);
    assert_eq!(ip::parse(&wire[22..]).unwrap().proto, 50);
    assert_eq!(
        gw.stage().counters().drops(DropReason::NoSa),
        0,
        "the SA was used"
    );
}

/// Tagged and untagged frames of the same flows through the threaded
/// pipeline with several workers: the receive threads dispatch tagged
/// frames by the SA of the IP packet behind the tags, like untagged ones,
/// so only the SA's owner ever sends with it (no sequence number, and no
/// AES-GCM nonce, used twice) and every frame arrives at site B's host
/// with its tags, in order per flow.
#[test]
fn tagged_frames_reach_the_owner_of_their_sa_among_workers() {
    let cfg = three_workers();
    let (a_host, a_host_in, _a_host_out) = port_of(LinkType::Ethernet);
    let (a_net, _a_net_in, a_net_out) = port_of(LinkType::Ethernet);
    let (b_host, _b_host_in, b_host_out) = port_of(LinkType::Ethernet);
    let (b_net, b_net_in, _b_net_out) = port_of(LinkType::Ethernet);
    let a = runner::start(&cfg, a_host, a_net, &|| stage("site-to-site-a.json"), None);
    let b = runner::start(&cfg, b_host, b_net, &|| stage("site-to-site-b.json"), None);
    let encaps = encaps();
    let mut sent = Vec::new();
    for n in 0..120u16 {
        let ip = if n % 2 == 0 {
            marked_udp(HOST_A, HOST_B, 64 + usize::from(n), true)
        } else {
            marked_udp(
                "2001:db8:a::10",
                "2001:db8:b::20",
                64 + usize::from(n),
                true,
            )
        };
        // Untagged, 802.1Q and QinQ in turn; the EtherType after the tags
        // follows the packet's family.
        let mut f = match n / 2 % 3 {
            0 => eth(Side::Host, &ip),
            k => frame(&encaps[usize::from(k - 1)], Side::Host, &ip),
        };
        if n % 2 == 1 {
            let at = Layer2::parse(&f).unwrap().header_len - 2;
            f[at..at + 2].copy_from_slice(&[0x86, 0xdd]);
        }
        sent.push(f.clone());
        a_host_in.send(f).unwrap();
    }
    let wire = collect(&a_net_out, sent.len());
    assert_eq!(wire.len(), sent.len());
    let mut spi_seq = std::collections::HashSet::new();
    for f in &wire {
        assert!(!carries_mark(f), "cleartext on the wire");
        let pkt = &f[Layer2::parse(f).unwrap().header_len..];
        let meta = ip::parse(pkt).unwrap();
        assert_eq!(meta.proto, 50);
        let esp = &pkt[meta.header_len..meta.header_len + 8];
        assert!(
            spi_seq.insert(esp.to_vec()),
            "SPI and sequence number sent twice: {esp:02x?}"
        );
        b_net_in.send(f.clone()).unwrap();
    }
    let got = collect(&b_host_out, sent.len());
    let (ra, fa) = a.stop();
    let (rb, fb) = b.stop();
    assert_eq!((fa, fb), (None, None));
    for v6 in [false, true] {
        let flow = |v: &[Vec<u8>]| -> Vec<Vec<u8>> {
            v.iter()
                .filter(|f| (Layer2::parse(f).unwrap().ethertype == 0x86dd) == v6)
                .cloned()
                .collect()
        };
        assert!(
            flow(&got) == flow(&sent),
            "v6 {v6}: frames changed or reordered"
        );
    }
    assert_eq!(got.len(), sent.len());
    assert_eq!(ra.stage.outbound_protected, 120);
    assert_eq!(rb.stage.inbound_decrypted, 120);
    assert_eq!(ra.stage.total_drops() + rb.stage.total_drops(), 0);
}

/// A packet too big for the tunnel, with DF, from a tagged host: the ICMP
/// error goes back to the host on its VLAN (tags kept, MACs swapped).
#[test]
fn an_icmp_error_goes_back_behind_the_same_tags() {
    for encap in &encaps()[..2] {
        let Want::Ip { header_len } = encap.want else {
            unreachable!()
        };
        let mut gw = gateway_a();
        let sent = frame(encap, Side::Host, &marked_udp(HOST_A, HOST_B, 1470, true));
        let out = replay_through(&mut gw, Side::Host, std::slice::from_ref(&sent));
        assert!(out.network.is_empty(), "{}", encap.name);
        let [(_, icmp)] = &out.host[..] else {
            panic!("{}: {:?}", encap.name, out.host);
        };
        assert_eq!(&icmp[..6], &sent[6..12], "{}", encap.name);
        assert_eq!(&icmp[6..12], &sent[..6], "{}", encap.name);
        assert_eq!(
            &icmp[12..header_len],
            &sent[12..header_len],
            "{}",
            encap.name
        );
        let meta = ip::parse(&icmp[header_len..]).unwrap();
        assert_eq!(meta.proto, 1, "{}", encap.name);
        assert_eq!(gw.stage().counters().drops(DropReason::TooBig), 1);
    }
}

/// ESP from site B fragmented on the way, behind 802.1Q and QinQ tags,
/// into a gateway with several workers: the receive thread reassembles it
/// (the tags put back in front of the whole packet) and hands it to the
/// SA's owner; host A gets it with its tags.
#[test]
fn fragmented_esp_behind_tags_is_reassembled_with_them() {
    let cfg = three_workers();
    let (a_host, _a_host_in, a_host_out) = port_of(LinkType::Ethernet);
    let (a_net, a_net_in, _a_net_out) = port_of(LinkType::Ethernet);
    let a = runner::start(&cfg, a_host, a_net, &|| stage("site-to-site-a.json"), None);
    let mut b = gateway_b();
    let mut want = Vec::new();
    for (n, encap) in encaps()[..2].iter().enumerate() {
        let Want::Ip { header_len } = encap.want else {
            unreachable!()
        };
        let sent = frame(
            encap,
            Side::Host,
            &marked_udp(HOST_B, HOST_A, 600 + n, false),
        );
        let out = replay_through(&mut b, Side::Host, std::slice::from_ref(&sent));
        let [(_, wire)] = &out.network[..] else {
            panic!("{}: {:?}", encap.name, out.network);
        };
        let (head, esp) = wire.split_at(header_len);
        let cut = (esp.len() - 20) / 2 / 8 * 8;
        for (start, end, more) in [(0, cut, true), (cut, esp.len() - 20, false)] {
            let piece = fragment_v4(esp, start, end, start, more);
            a_net_in.send([head, &piece].concat()).unwrap();
        }
        want.push(sent);
    }
    let got = collect(&a_host_out, want.len());
    let (report, failure) = a.stop();
    assert_eq!(failure, None);
    assert!(got == want, "got {got:02x?}");
    assert_eq!(report.stage.reassembled, 2);
    assert_eq!(report.stage.inbound_decrypted, 2);
}
