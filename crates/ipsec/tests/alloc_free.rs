//! No heap allocation per packet in steady state (DESIGN.md): a counting
//! global allocator (allocation-counter, which counts the calling thread
//! only) watches the stage while it protects and verifies packets, for
//! every transform, in both modes, with and without UDP encapsulation.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::Disposition;
use bitsgw_wire::{PacketBuf, Timestamp};
use common::*;

/// The counter counts: a test that could not see allocations would pass
/// whatever the stage did.
#[test]
fn the_counter_sees_an_allocation() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(10));
    });
    assert_eq!(info.count_total, 1);
}

#[test]
fn protect_and_verify_allocate_nothing_per_packet() {
    for transform in transforms() {
        for tunnel in [false, true] {
            for udp_encap in [None, Some((4500, 4500))] {
                let spec = PairSpec {
                    transform,
                    tunnel,
                    udp_encap,
                    inner_v6: tunnel,
                    ..PairSpec::default()
                };
                let (mut a, mut b) = spec.stages();
                let (ha, hb) = spec.inner();
                let pkt = udp_packet(ha, hb, 1, 2, 1000);
                let mut buf = PacketBuf::from_slice(&pkt);
                // Warm up: first use of each code path.
                for _ in 0..4 {
                    buf.set(&pkt).unwrap();
                    assert_eq!(
                        a.handle_outbound(&mut buf, Timestamp::ZERO),
                        Disposition::Forward
                    );
                    assert_eq!(
                        b.handle_inbound(&mut buf, Timestamp::ZERO),
                        Disposition::Deliver
                    );
                }
                let mut failures = 0u32;
                let info = allocation_counter::measure(|| {
                    for _ in 0..1000 {
                        if buf.set(&pkt).is_err() {
                            failures += 1;
                        }
                        let out = a.handle_outbound(&mut buf, Timestamp::ZERO);
                        let back = b.handle_inbound(&mut buf, Timestamp::ZERO);
                        if out != Disposition::Forward || back != Disposition::Deliver {
                            failures += 1;
                        }
                    }
                });
                assert_eq!(failures, 0, "{spec:?}");
                assert_eq!(
                    info.count_total, 0,
                    "{spec:?}: {} allocations in 1000 round trips",
                    info.count_total
                );
            }
        }
    }
}

/// Hostile traffic with ever new flow keys makes the SPD's flow cache
/// evict, never grow: 100k distinct keys through a full cache allocate
/// nothing, and its size stays what it was made with.
#[test]
fn flow_cache_does_not_grow_under_random_keys() {
    use bitsgw_ipsec::flow_cache::FlowCache;
    use bitsgw_ipsec::selector::{Addr, Family, FlowKey, NextLayer};
    let mut cache = FlowCache::<Option<usize>>::default();
    let capacity = cache.capacity();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut key = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        FlowKey {
            local: Addr {
                family: Family::V6,
                bits: u128::from(x) << 64 | u128::from(x.rotate_left(17)),
            },
            remote: Addr {
                family: Family::V4,
                bits: u128::from(x as u32),
            },
            proto: (x >> 56) as u8,
            next: NextLayer::Ports {
                local: (x >> 32) as u16,
                remote: (x >> 48) as u16,
            },
        }
    };
    let mut decided = 0u64;
    let info = allocation_counter::measure(|| {
        for _ in 0..100_000 {
            let k = key();
            cache.get_or_insert_with(&k, |_| {
                decided += 1;
                Some(1)
            });
        }
    });
    assert_eq!(info.count_total, 0, "{} allocations", info.count_total);
    assert_eq!(decided, 100_000, "every key was new");
    assert_eq!(cache.capacity(), capacity);
    assert_eq!(cache.len(), capacity);
}

/// RFC 4301 acquire: packets for an IKE-keyed SA not installed yet raise
/// its acquire and are dropped, allocating nothing however many come.
#[test]
fn acquires_allocate_nothing_per_packet() {
    use bitsgw_ipsec::{AcquireSignal, DropReason, IpsecStage, StageConfig};
    let set = bitsgw_ipsec::config::parse_policy(
        r#"{"spd": {"outbound": [{"name": "out", "local": "192.0.2.0/24",
              "remote": "198.51.100.0/24", "action": "protect", "sa": "a-to-b"}],
            "inbound": [{"name": "in", "local": "192.0.2.0/24",
              "remote": "198.51.100.0/24", "action": "protect", "sa": "b-to-a"}]},
           "sad": [
            {"name": "a-to-b", "direction": "outbound", "keyed_by": "ike", "mode": "tunnel",
             "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}},
            {"name": "b-to-a", "direction": "inbound", "keyed_by": "ike", "mode": "tunnel",
             "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}}]}"#,
        "acquire.json",
    )
    .unwrap();
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    let signal = std::sync::Arc::new(AcquireSignal::default());
    stage.set_acquire("a-to-b", std::sync::Arc::clone(&signal));
    let pkt = udp_packet(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.20".parse().unwrap(),
        1,
        2,
        100,
    );
    let mut buf = PacketBuf::from_slice(&pkt);
    let pending = Disposition::Drop(DropReason::AcquirePending);
    assert_eq!(stage.handle_outbound(&mut buf, Timestamp::ZERO), pending);
    let mut failures = 0u32;
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            if buf.set(&pkt).is_err() || stage.handle_outbound(&mut buf, Timestamp::ZERO) != pending
            {
                failures += 1;
            }
        }
    });
    assert_eq!(failures, 0);
    assert_eq!(info.count_total, 0, "{} allocations", info.count_total);
    assert!(signal.take());
    assert_eq!(stage.counters().drops(DropReason::AcquirePending), 1001);
}
