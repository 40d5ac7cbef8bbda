//! The burst path against the one-at-a-time path: the same random mix of
//! packets through two stages built alike, one packet at a time and in
//! bursts of random lengths, gives the same dispositions, bytes,
//! fragments, events and counters.

use super::*;
use crate::config::parse_policy;
use bitsgw_wire::craft::{ip_packet, udp_packet};
use std::net::IpAddr;

/// A small deterministic generator (xorshift64), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Gateway A (192.0.2.0/24 behind 203.0.113.1) or B (198.51.100.0/24
/// behind 203.0.113.2): two SAs each way, "web" for 198.51.100.0/25 and
/// "db" for 198.51.100.128/25; on A 192.0.2.128/26 is bypassed and
/// 192.0.2.192/26 discarded. B takes only UDP on "web", so TCP that A
/// sends there fails B's inner check. The replay window is on.
fn gateway(a: bool) -> IpsecStage {
    let (me, peer) = if a {
        ("203.0.113.1", "203.0.113.2")
    } else {
        ("203.0.113.2", "203.0.113.1")
    };
    let (mine, theirs) = if a {
        ("192.0.2.0/24", "198.51.100.0/24")
    } else {
        ("198.51.100.0/24", "192.0.2.0/24")
    };
    let sa = |name: &str, dir: &str, spi: u32, key: &str| {
        format!(
            r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
             "tunnel": {{"local": "{me}", "remote": "{peer}"}}, "replay_window": 64,
             "transform": "aes-gcm-128", "enc_key": "{key}"}}"#
        )
    };
    // SPIs by the sender: A's "web" is 0x100, "db" 0x200; B's 0x300, 0x400.
    let (out_web, out_db, in_web, in_db) = if a {
        (0x100, 0x200, 0x300, 0x400)
    } else {
        (0x300, 0x400, 0x100, 0x200)
    };
    // Keys of their own per SA, the same on both sides.
    let key = |spi: u32| format!("0x{spi:08x}0405060708090a0b0c0d0e0f10111213");
    let half = |lower: bool| {
        if lower {
            "198.51.100.0/25"
        } else {
            "198.51.100.128/25"
        }
    };
    let entry = |name: &str, sa_name: &str, lower: bool, udp_only: bool| {
        let (local, remote) = if a {
            (mine.to_string(), half(lower).to_string())
        } else {
            (half(lower).to_string(), theirs.to_string())
        };
        let proto = if udp_only { r#""proto": "udp","# } else { "" };
        format!(
            r#"{{"name": "{name}", "local": "{local}", "remote": "{remote}", {proto}
             "action": "protect", "sa": "{sa_name}"}}"#
        )
    };
    let side = |dir: &str| {
        let (web, db) = if dir == "out" {
            ("out-web", "out-db")
        } else {
            ("in-web", "in-db")
        };
        let udp_only = !a && dir == "in";
        // A's own hosts: local to A, remote to B.
        let hosts = if a { "local" } else { "remote" };
        format!(
            r#"[{{"name": "bypass", "{hosts}": "192.0.2.128/26", "action": "bypass"}},
               {{"name": "discard", "{hosts}": "192.0.2.192/26", "action": "discard"}},
               {}, {}]"#,
            entry("web", web, true, udp_only),
            entry("db", db, false, false)
        )
    };
    let text = format!(
        r#"{{"danger_static_keys_for_counter_mode": true,
          "spd": {{"outbound": {}, "inbound": {}}},
          "sad": [{}, {}, {}, {}]}}"#,
        side("out"),
        side("in"),
        sa("out-web", "outbound", out_web, &key(out_web)),
        sa("out-db", "outbound", out_db, &key(out_db)),
        sa("in-web", "inbound", in_web, &key(in_web)),
        sa("in-db", "inbound", in_db, &key(in_db)),
    );
    let set = parse_policy(&text, "t.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut s = IpsecStage::new(StageConfig::default());
    set.apply(&mut s, Timestamp::ZERO).unwrap();
    s
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

/// One packet A's host side may send: protected on either SA (UDP, TCP),
/// bypassed, discarded, of no policy, too big with and without DF, or
/// not IP. Flows come from a few each, so consecutive packets often
/// share one.
fn outbound_packet(rng: &mut Rng) -> Vec<u8> {
    let flow = rng.below(3) as u8;
    let len = rng.below(200) as usize;
    match rng.below(10) {
        0..=2 => udp_packet(
            v4(192, 0, 2, 1 + flow),
            v4(198, 51, 100, 1),
            4000,
            5000,
            len,
        ),
        3 => udp_packet(
            v4(192, 0, 2, 1),
            v4(198, 51, 100, 130 + flow),
            4000,
            5000,
            len,
        ),
        4 => ip_packet(
            v4(192, 0, 2, 1),
            v4(198, 51, 100, 2),
            proto::TCP,
            &[0; 20],
            true,
        ),
        5 => udp_packet(v4(192, 0, 2, 130), v4(198, 51, 100, 1 + flow), 1, 2, len),
        6 => udp_packet(v4(192, 0, 2, 200), v4(198, 51, 100, 1), 1, 2, len),
        7 => udp_packet(v4(203, 0, 113, 50), v4(198, 51, 100, 1), 1, 2, len),
        8 => {
            // 1480 bytes: too big once protected; with DF an ICMP error,
            // without it fragments.
            let mut p = udp_packet(v4(192, 0, 2, 1), v4(198, 51, 100, 1), 4000, 5000, 1452);
            if rng.below(2) == 0 {
                p[6] = 0;
                ip::ipv4_fill_checksum(&mut p);
            }
            p
        }
        _ => (0..rng.below(40)).map(|_| rng.next() as u8).collect(),
    }
}

/// What a stage made of one packet: its disposition, the buffer after,
/// and any fragments it left to send.
type Result1 = (Disposition, Vec<u8>, Vec<Vec<u8>>);

fn fragments(s: &mut IpsecStage) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = PacketBuf::new();
    while s.poll_transmit(&mut b) {
        out.push(b.data().to_vec());
    }
    out
}

fn one_at_a_time(s: &mut IpsecStage, packets: &[Vec<u8>], outbound: bool) -> Vec<Result1> {
    packets
        .iter()
        .map(|p| {
            let mut b = PacketBuf::from_slice(p);
            let d = if outbound {
                s.handle_outbound(&mut b, Timestamp::ZERO)
            } else {
                s.handle_inbound(&mut b, Timestamp::ZERO)
            };
            (d, b.data().to_vec(), fragments(s))
        })
        .collect()
}

fn in_bursts(
    s: &mut IpsecStage,
    packets: &[Vec<u8>],
    outbound: bool,
    rng: &mut Rng,
) -> Vec<Result1> {
    let mut results = Vec::new();
    let mut next = 0;
    while next < packets.len() {
        let len = (1 + rng.below(40) as usize).min(packets.len() - next);
        let mut bufs: Vec<PacketBuf> = packets[next..next + len]
            .iter()
            .map(|p| PacketBuf::from_slice(p))
            .collect();
        let mut ds = vec![Disposition::Held; len];
        let mut done = 0;
        while done < len {
            let (burst, d) = (&mut bufs[done..], &mut ds[done..]);
            let n = if outbound {
                s.handle_outbound_burst(burst, |_| None, Timestamp::ZERO, d)
            } else {
                s.handle_inbound_burst(burst, |_| None, Timestamp::ZERO, d)
            };
            assert!(n >= 1);
            for i in done..done + n {
                // Fragments belong to the last packet of a burst.
                let frags = if i + 1 == done + n {
                    fragments(s)
                } else {
                    Vec::new()
                };
                results.push((ds[i], bufs[i].data().to_vec(), frags));
            }
            done += n;
        }
        next += len;
    }
    results
}

/// Everything a stage counts, for comparison.
fn state(s: &IpsecStage) -> String {
    let sas: Vec<String> = s
        .sad()
        .iter()
        .map(|(id, sa)| format!("{id:?} {:?} {:?}", sa.stats, sa.state))
        .collect();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{sas:?}",
        s.counters(),
        s.spd(Direction::Outbound).hits(),
        s.spd(Direction::Inbound).hits(),
        s.parse_counts(),
    )
}

fn events(s: &mut IpsecStage) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Runs `packets` through gateway A's stage (`outbound`) or B's one at
/// a time and, through a stage built alike, in bursts; asserts that both
/// ended alike, packet for packet and in every counter, and returns the
/// results.
fn assert_bursts_equal_one_at_a_time(
    outbound: bool,
    packets: &[Vec<u8>],
    rng: &mut Rng,
    seed: u64,
) -> Vec<Result1> {
    let (mut single, mut burst) = (gateway(outbound), gateway(outbound));
    let expected = one_at_a_time(&mut single, packets, outbound);
    let got = in_bursts(&mut burst, packets, outbound, rng);
    assert_eq!(expected.len(), got.len());
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(e, g, "seed {seed}, packet {i}");
    }
    assert_eq!(state(&single), state(&burst), "seed {seed}");
    assert_eq!(events(&mut single), events(&mut burst), "seed {seed}");
    expected
}

/// Reasons the differential runs must have met, so they test something.
fn assert_covers(results: &[Result1], wanted: &[Disposition]) {
    for w in wanted {
        assert!(
            results.iter().any(|(d, ..)| d == w),
            "no packet ended as {w:?}"
        );
    }
}

#[test]
fn outbound_bursts_equal_one_at_a_time() {
    for seed in 1..=6u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let packets: Vec<Vec<u8>> = (0..600).map(|_| outbound_packet(&mut rng)).collect();
        let expected = assert_bursts_equal_one_at_a_time(true, &packets, &mut rng, seed);
        assert_covers(
            &expected,
            &[
                Disposition::Forward,
                Disposition::IcmpError,
                Disposition::Drop(DropReason::PolicyDiscard),
                Disposition::Drop(DropReason::NoPolicy),
                Disposition::Drop(DropReason::Malformed),
            ],
        );
        assert!(expected
            .iter()
            .any(|(d, ..)| matches!(d, Disposition::Fragmented(_))));
    }
}

/// What B's network side may receive: A's ESP on either SA, fragments of
/// A's large ESP packets, replays of earlier ones, ones with a flipped ICV
/// byte or an SPI nobody has, ESP cut short, A's TCP on "web" (B's inner
/// check refuses it), cleartext B bypasses, discards or expects
/// protected, and bytes that are not IP.
fn inbound_mix(rng: &mut Rng, a: &mut IpsecStage, n: usize) -> Vec<Vec<u8>> {
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let kind = rng.below(12);
        let plain = match kind {
            0..=3 => Some(outbound_packet(rng)),
            4 => Some(ip_packet(
                v4(192, 0, 2, 1),
                v4(198, 51, 100, 2),
                proto::TCP,
                &[0; 20],
                true,
            )),
            5 => {
                let mut p = udp_packet(v4(192, 0, 2, 1), v4(198, 51, 100, 1), 4000, 5000, 1452);
                p[6] = 0;
                ip::ipv4_fill_checksum(&mut p);
                Some(p)
            }
            _ => None,
        };
        if let Some(p) = plain {
            let mut b = PacketBuf::from_slice(&p);
            match a.handle_outbound(&mut b, Timestamp::ZERO) {
                Disposition::Forward => {
                    sent.push(b.data().to_vec());
                    out.push(b.data().to_vec());
                }
                Disposition::Fragmented(_) => out.extend(fragments(a)),
                _ => {}
            }
            continue;
        }
        let earlier =
            (!sent.is_empty()).then(|| sent[rng.below(sent.len() as u64) as usize].clone());
        match (kind, earlier) {
            (6, Some(p)) => out.push(p),
            (7, Some(mut p)) => {
                let last = p.len() - 1;
                p[last] ^= 1;
                out.push(p);
            }
            (8, Some(mut p)) => {
                p[20..24].copy_from_slice(&0x7777u32.to_be_bytes());
                out.push(p);
            }
            (9, Some(mut p)) => {
                p.truncate(20 + 8 + 4);
                ip::set_total_len(&mut p, 32);
                ip::ipv4_fill_checksum(&mut p);
                out.push(p);
            }
            (10, _) => {
                let src = [v4(192, 0, 2, 130), v4(192, 0, 2, 200), v4(192, 0, 2, 5)];
                let from = src[rng.below(3) as usize];
                out.push(udp_packet(from, v4(198, 51, 100, 1), 1, 2, 30));
            }
            _ => out.push((0..rng.below(40)).map(|_| rng.next() as u8).collect()),
        }
    }
    out
}

#[test]
fn inbound_bursts_equal_one_at_a_time() {
    for seed in 1..=6u64 {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ seed);
        let mut a = gateway(true);
        let packets = inbound_mix(&mut rng, &mut a, 600);
        let expected = assert_bursts_equal_one_at_a_time(false, &packets, &mut rng, seed);
        assert_covers(
            &expected,
            &[
                Disposition::Deliver,
                Disposition::Held,
                Disposition::Drop(DropReason::ReplayDuplicate),
                Disposition::Drop(DropReason::IcvFailure),
                Disposition::Drop(DropReason::UnknownSpi),
                Disposition::Drop(DropReason::EspTruncated),
                Disposition::Drop(DropReason::InnerSelectorMismatch),
                Disposition::Drop(DropReason::UnprotectedTraffic),
                Disposition::Drop(DropReason::Malformed),
            ],
        );
    }
}

/// An SA removed by a packet of a burst (its hard packet limit) is not
/// used by the burst's later packets of its SPI: the SAD's generation
/// moved, so the SPI is looked up anew and they are dropped as on their
/// own.
#[test]
fn an_sa_removed_within_a_burst_opens_nothing_more() {
    let limited = || {
        let mut b = gateway(false);
        let id = b.sad.by_name("in-web").unwrap();
        let mut params = b.sad.get(id).unwrap().params.clone();
        params.hard.packets = Some(5);
        let hex = format!("{:08x}0405060708090a0b0c0d0e0f10111213", params.spi);
        let key = (0..20)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        params.enc_key = zeroize::Zeroizing::new(key);
        b.remove_sa(id);
        b.install_sa(params, Timestamp::ZERO).unwrap();
        b
    };
    let mut a = gateway(true);
    let packets: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let p = udp_packet(v4(192, 0, 2, 1), v4(198, 51, 100, 1), 4000, 5000, 10 + i);
            let mut b = PacketBuf::from_slice(&p);
            assert_eq!(
                a.handle_outbound(&mut b, Timestamp::ZERO),
                Disposition::Forward
            );
            b.data().to_vec()
        })
        .collect();
    let (mut single, mut burst) = (limited(), limited());
    let expected = one_at_a_time(&mut single, &packets, false);
    let mut bufs: Vec<PacketBuf> = packets.iter().map(|p| PacketBuf::from_slice(p)).collect();
    let mut ds = vec![Disposition::Held; bufs.len()];
    assert_eq!(
        burst.handle_inbound_burst(&mut bufs, |_| None, Timestamp::ZERO, &mut ds),
        packets.len()
    );
    let got: Vec<Result1> = ds
        .iter()
        .zip(&bufs)
        .map(|(d, b)| (*d, b.data().to_vec(), Vec::new()))
        .collect();
    assert_eq!(expected, got);
    assert_eq!(
        ds[5..],
        [Disposition::Drop(DropReason::UnknownSpi); 5],
        "{ds:?}"
    );
    assert_eq!(state(&single), state(&burst));
}
