//! Faults while traffic flows between two site-to-site gateways (in
//! memory, raw IP ports): an SA replaced, policies reloaded, a peer
//! restarted, an SA's hard lifetime reached. For each: what is lost, what
//! is counted, and that nothing leaves in clear.
#![allow(clippy::unwrap_used)]

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{Disposition, DropReason, IpsecStage, StageConfig};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Outcome, Side};
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::IpAddr;
use std::path::PathBuf;

const HOST_A: &str = "192.0.2.10";
const HOST_B: &str = "198.51.100.20";

fn text(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// A gateway on the policy text.
fn gateway(policy: &str) -> Gateway {
    let set = parse_policy(policy, "faults.json").unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    Gateway::new(stage)
}

fn reload(gw: &mut Gateway, policy: &str, now: Timestamp) -> bitsgw_ipsec::config::ReloadSummary {
    parse_policy(policy, "faults.json")
        .unwrap()
        .reload(gw.stage_mut(), now)
        .unwrap()
}

/// The A -> B SA (a-to-b-v4, SPI 0x3001) with a new SPI and key, in both
/// files' texts.
fn rekeyed(policy: &str) -> String {
    policy.replace("0x00003001", "0x00003101").replace(
        &key_of(&text("site-to-site-a.json"), "a-to-b-v4"),
        "0x000102030405060708090a0b0c0d0e0f10111213",
    )
}

fn key_of(policy: &str, sa: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(policy).unwrap();
    v["sad"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sa)
        .unwrap()["enc_key"]
        .as_str()
        .unwrap()
        .to_string()
}

fn packet(i: u32) -> Vec<u8> {
    let mut p = bitsgw_wire::craft::udp_packet(
        HOST_A.parse::<IpAddr>().unwrap(),
        HOST_B.parse().unwrap(),
        5000,
        6000,
        64,
    );
    let n = p.len();
    p[n - 4..].copy_from_slice(&i.to_be_bytes());
    p
}

fn send(
    gw: &mut Gateway,
    from: Side,
    pkt: &[u8],
    now: Timestamp,
) -> (Outcome, Vec<(Side, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut buf = PacketBuf::from_slice(pkt);
    let o = gw.handle_frame(
        from,
        LinkType::RawIp,
        &mut buf,
        now,
        &mut |s, f| out.push((s, f.to_vec())),
        &mut NoTap,
    );
    (o, out)
}

/// Packet `i` from host A: what left A on the network side (only ESP, never
/// the cleartext), if anything.
fn from_host_a(a: &mut Gateway, i: u32, now: Timestamp) -> Option<Vec<u8>> {
    let (_, out) = send(a, Side::Host, &packet(i), now);
    for (side, f) in &out {
        assert_eq!(*side, Side::Network);
        assert_eq!(f[9], 50, "only ESP leaves A");
        let clear = &packet(i)[28..60];
        assert!(
            !f.windows(clear.len()).any(|w| w == clear),
            "no cleartext payload on the wire"
        );
    }
    out.into_iter().next().map(|(_, f)| f)
}

/// Carries ESP into B; true if B delivered the original packet `i`.
fn into_b(b: &mut Gateway, esp: &[u8], i: u32, now: Timestamp) -> bool {
    let (_, out) = send(b, Side::Network, esp, now);
    out.iter().any(|(s, f)| *s == Side::Host && *f == packet(i))
}

#[test]
fn an_sa_replaced_while_traffic_flows_loses_nothing() {
    let (ta, tb) = (text("site-to-site-a.json"), text("site-to-site-b.json"));
    let (mut a, mut b) = (gateway(&ta), gateway(&tb));
    let now = Timestamp::from_secs(1);
    let mut delivered = 0;
    for i in 0..100u32 {
        // The receiver first (its old SA kept until the new one is in
        // use), then the sender.
        if i == 40 {
            assert_eq!(reload(&mut b, &rekeyed(&tb), now).installed, 1);
        }
        if i == 60 {
            assert_eq!(reload(&mut a, &rekeyed(&ta), now).installed, 1);
        }
        let esp = from_host_a(&mut a, i, now).unwrap();
        let spi = u32::from_be_bytes(esp[20..24].try_into().unwrap());
        assert_eq!(spi, if i < 60 { 0x3001 } else { 0x3101 });
        if into_b(&mut b, &esp, i, now) {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 100);
    assert_eq!(b.stage().counters().total_drops(), 0);
    // Once the new SA is in use the old SPI is gone: a straggler under it
    // is refused, counted.
    let mut old = gateway(&ta);
    let late = from_host_a(&mut old, 1000, now).unwrap();
    assert!(!into_b(&mut b, &late, 1000, now));
    assert_eq!(b.stage().counters().drops(DropReason::UnknownSpi), 1);
}

#[test]
fn policy_reload_under_load_keeps_sequence_numbers_and_windows() {
    let (ta, tb) = (text("site-to-site-a.json"), text("site-to-site-b.json"));
    let (mut a, mut b) = (gateway(&ta), gateway(&tb));
    let now = Timestamp::from_secs(1);
    for i in 0..100u32 {
        if i % 10 == 5 {
            assert_eq!(reload(&mut a, &ta, now).installed, 0, "unchanged SAs kept");
            assert_eq!(reload(&mut b, &tb, now).installed, 0);
        }
        let esp = from_host_a(&mut a, i, now).unwrap();
        let seq = u32::from_be_bytes(esp[24..28].try_into().unwrap());
        assert_eq!(seq, i + 1, "the sequence number carries on");
        assert!(into_b(&mut b, &esp, i, now));
    }
    assert_eq!(b.stage().counters().total_drops(), 0);
}

#[test]
fn a_restarted_peer_is_refused_until_its_sa_is_replaced() {
    let (ta, tb) = (text("site-to-site-a.json"), text("site-to-site-b.json"));
    let (mut a, mut b) = (gateway(&ta), gateway(&tb));
    let now = Timestamp::from_secs(1);
    for i in 0..50u32 {
        let esp = from_host_a(&mut a, i, now).unwrap();
        assert!(into_b(&mut b, &esp, i, now));
    }
    // A restarts with the same manual keys: its sequence numbers start at
    // 1 again, which B has seen: refused, counted, nothing in clear.
    let mut a = gateway(&ta);
    for i in 50..80u32 {
        let esp = from_host_a(&mut a, i, now).unwrap();
        assert!(!into_b(&mut b, &esp, i, now));
    }
    assert_eq!(b.stage().counters().drops(DropReason::ReplayDuplicate), 30);
    // The SA is replaced on both sides: traffic flows again.
    reload(&mut b, &rekeyed(&tb), now);
    reload(&mut a, &rekeyed(&ta), now);
    for i in 80..100u32 {
        let esp = from_host_a(&mut a, i, now).unwrap();
        assert!(into_b(&mut b, &esp, i, now));
    }
}

#[test]
fn hard_expiry_mid_stream_drops_and_never_leaks() {
    let limited = |t: &str| {
        let mut v: serde_json::Value = serde_json::from_str(t).unwrap();
        for sa in v["sad"].as_array_mut().unwrap() {
            if sa["name"] == "a-to-b-v4" {
                sa["lifetime"] = serde_json::json!({"hard": {"packets": 50}});
            }
        }
        v.to_string()
    };
    let ta = limited(&text("site-to-site-a.json"));
    let mut a = gateway(&ta);
    let mut b = gateway(&text("site-to-site-b.json"));
    let now = Timestamp::from_secs(1);
    let mut left = 0;
    for i in 0..80u32 {
        if let Some(esp) = from_host_a(&mut a, i, now) {
            left += 1;
            assert!(into_b(&mut b, &esp, i, now));
        }
    }
    assert_eq!(left, 50, "the SA carried its 50 packets");
    assert_eq!(
        a.stage().counters().drops(DropReason::NoSa),
        30,
        "then every packet dropped, counted"
    );
    let (o, _) = send(&mut a, Side::Host, &packet(999), now);
    assert_eq!(o, Outcome::Ipsec(Disposition::Drop(DropReason::NoSa)));
}
