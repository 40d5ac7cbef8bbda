//! ESP throughput: the raw AES-GCM ceiling of both backends, the same
//! through `Transform::seal`, and tunnel-mode encapsulation and
//! decapsulation through the IPsec stage for every transform.
//!
//! Groups:
//! - `aead_raw/<backend>/<len>`: AES-128-GCM sealed in place on `len` bytes
//!   with an 8-byte AAD (the size of ESP's `SPI || Seq`), calling ring's
//!   `LessSafeKey::seal_in_place_separate_tag` or RustCrypto's
//!   `encrypt_in_place_detached` directly.
//! - `aead_transform/<backend>/<len>`: `Transform::seal` on an ESP packet
//!   whose payload region is `len` bytes (so the encrypted bytes equal the
//!   raw case); adds nonce and AAD assembly and the IV and ICV writes.
//! - `copy/<what>/<len>`: `PacketBuf::set` alone, the per-iteration copy
//!   that the stage benches below include.
//! - `esp_encap/<transform>/<len>`: copy a `len`-byte IPv4 UDP packet into
//!   a reused buffer, then `IpsecStage::handle_outbound` (SPD lookup, SA,
//!   tunnel-mode ESP over IPv4, crypto).
//! - `esp_decap/<transform>/<len>`: copy the ESP packet that sealed a
//!   `len`-byte inner packet into a reused buffer, then
//!   `IpsecStage::handle_inbound` (SAD lookup, crypto, decapsulation,
//!   inbound policy check). The receiving SA has `replay_window: 0` (the
//!   check is off, RFC 4303 3.4.3 lets the receiver disable it) so one
//!   packet can be decrypted again and again; with a window the second
//!   copy would be dropped as a replay.
//!
//! Throughput is counted in bytes of the buffer the operation takes: the
//! plaintext for `aead_*`, the inner packet for `esp_*` (goodput), the
//! copied bytes for `copy`. GCM transforms in the stage use
//! `GcmBackend::default()`; `aes-gcm-128+ring` is the same with ring.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes128Gcm;
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId, ESP_HEADER_LEN, ICV_LEN};
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_wire::{checksum, PacketBuf, Timestamp};
use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};

/// Key material: the first `enc_key_len` / `auth_key_len` bytes are used.
const KEY: [u8; 36] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
    0x0a, 0x0b, 0x0c, 0x0d,
];

const AEAD_SIZES: [usize; 5] = [64, 256, 512, 1400, 9000];
const STAGE_SIZES: [usize; 4] = [64, 256, 512, 1400];

const INNER_A: [u8; 4] = [192, 0, 2, 1];
const INNER_B: [u8; 4] = [198, 51, 100, 1];
const OUTER_A: &str = "203.0.113.1";
const OUTER_B: &str = "203.0.113.2";

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The policy file of gateway A (`a`) or B of a tunnel-mode pair that
/// protects 192.0.2.0/24 <-> 198.51.100.0/24 with `transform`.
fn pair_policy(a: bool, transform: TransformId, backend: GcmBackend, replay_window: u32) -> String {
    let (me_in, peer_in, me_out, peer_out) = if a {
        ("192.0.2.0/24", "198.51.100.0/24", OUTER_A, OUTER_B)
    } else {
        ("198.51.100.0/24", "192.0.2.0/24", OUTER_B, OUTER_A)
    };
    let (spi_out, spi_in) = if a {
        (0x1001, 0x2002)
    } else {
        (0x2002, 0x1001)
    };
    // Each SA has keys of its own (one key on two SAs is refused), the
    // same on both sides: the bench key with the SPI in its first octets.
    let key_for = |spi: u32, len: usize| {
        let mut k = KEY;
        k[..4].copy_from_slice(&spi.to_be_bytes());
        hex(&k[..len])
    };
    let sa = |name: &str, dir: &str, spi: u32| {
        let enc = key_for(spi, transform.enc_key_len());
        let auth = match transform.auth_key_len() {
            0 => String::new(),
            n => format!(r#""auth_key": "{}","#, key_for(spi, n)),
        };
        format!(
            r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
                "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}}, {auth}
                "transform": "{t}", "enc_key": "{enc}", "replay_window": {replay_window},
                "backend": "{b}"}}"#,
            t = transform.name(),
            b = backend.name(),
        )
    };
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{
  "outbound": [{{"name": "to-peer", "local": "{me_in}", "remote": "{peer_in}", "action": "protect", "sa": "out"}}],
  "inbound": [{{"name": "from-peer", "local": "{me_in}", "remote": "{peer_in}", "action": "protect", "sa": "in"}}]
}}, "sad": [{}, {}]}}"#,
        sa("out", "outbound", spi_out),
        sa("in", "inbound", spi_in)
    )
}

fn stage(a: bool, transform: TransformId, backend: GcmBackend, replay_window: u32) -> IpsecStage {
    let text = pair_policy(a, transform, backend, replay_window);
    let set = parse_policy(&text, "bench.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO)
        .unwrap_or_else(|e| panic!("{e}"));
    stage
}

/// An IPv4 UDP packet of `total_len` bytes from A's inside to B's inside,
/// with valid header and UDP checksums.
fn udp_v4(total_len: usize) -> Vec<u8> {
    assert!(total_len >= 28);
    let mut p = vec![0u8; total_len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&INNER_A);
    p[16..20].copy_from_slice(&INNER_B);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = total_len - 20;
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5000u16.to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let acc = checksum::pseudo_header(&INNER_A, &INNER_B, 17, udp_len as u32);
    let c = checksum::finish(checksum::sum(acc, &p[20..]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

fn bench_aead(c: &mut Criterion) {
    let key = &KEY[..16];
    let nonce = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1];
    let aad = [0u8, 0, 0x10, 0x01, 0, 0, 0, 1];
    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key).expect("ring key"));
    let rc_key = Aes128Gcm::new_from_slice(key).expect("aes-gcm key");

    let mut raw = c.benchmark_group("aead_raw");
    for len in AEAD_SIZES {
        raw.throughput(Throughput::Bytes(len as u64));
        let mut buf = vec![0x5au8; len];
        raw.bench_with_input(BenchmarkId::new("ring", len), &len, |b, _| {
            b.iter(|| {
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        black_box(&mut buf[..]),
                    )
                    .expect("seal");
                black_box(tag)
            })
        });
        raw.bench_with_input(BenchmarkId::new("rustcrypto", len), &len, |b, _| {
            b.iter(|| {
                let tag = rc_key
                    .encrypt_in_place_detached(&nonce.into(), &aad, black_box(&mut buf[..]))
                    .expect("seal");
                black_box(tag)
            })
        });
    }
    raw.finish();

    let mut tr = c.benchmark_group("aead_transform");
    for backend in GcmBackend::ALL {
        let t =
            Transform::new(TransformId::AesGcm128, backend, &KEY[..20], &[]).expect("transform");
        for len in AEAD_SIZES {
            tr.throughput(Throughput::Bytes(len as u64));
            // [SPI][Seq = 1][IV 8][payload region len][ICV]
            let mut esp = vec![0x5au8; ESP_HEADER_LEN + 8 + len + ICV_LEN];
            esp[..8].copy_from_slice(&aad);
            // Sealing rewrites IV and ICV and encrypts the payload region,
            // so the same buffer can be sealed again without a copy.
            t.seal(&mut esp, 1, false).expect("seal");
            tr.bench_with_input(BenchmarkId::new(backend.name(), len), &len, |b, _| {
                b.iter(|| t.seal(black_box(&mut esp[..]), 1, false))
            });
        }
    }
    tr.finish();
}

/// The transforms of the stage benches: every transform with the default
/// GCM backend, and AES-GCM-128 once more on the other backend.
fn stage_variants() -> Vec<(String, TransformId, GcmBackend)> {
    let default = GcmBackend::default();
    let mut v: Vec<_> = TransformId::ALL
        .iter()
        .map(|t| (t.name().to_string(), *t, default))
        .collect();
    for other in GcmBackend::ALL.into_iter().filter(|b| *b != default) {
        v.push((
            format!("{}+{}", TransformId::AesGcm128.name(), other.name()),
            TransformId::AesGcm128,
            other,
        ));
    }
    v
}

/// The ESP packet gateway A sends for `plain`.
fn sealed(a: &mut IpsecStage, plain: &[u8]) -> Vec<u8> {
    let mut buf = PacketBuf::from_slice(plain);
    let d = a.handle_outbound(&mut buf, Timestamp::ZERO);
    assert_eq!(d, Disposition::Forward, "encapsulation failed");
    buf.data().to_vec()
}

fn bench_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy");
    let mut a = stage(true, TransformId::AesGcm128, GcmBackend::default(), 64);
    for len in STAGE_SIZES {
        let plain = udp_v4(len);
        let esp = sealed(&mut a, &plain);
        let mut buf = PacketBuf::new();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("plain", len), &len, |b, _| {
            b.iter(|| buf.set(black_box(&plain)))
        });
        g.bench_with_input(BenchmarkId::new("esp-aes-gcm-128", len), &len, |b, _| {
            b.iter(|| buf.set(black_box(&esp)))
        });
    }
    g.finish();
}

fn bench_encap(c: &mut Criterion) {
    let mut g = c.benchmark_group("esp_encap");
    for (name, transform, backend) in stage_variants() {
        for len in STAGE_SIZES {
            let plain = udp_v4(len);
            let mut a = stage(true, transform, backend, 64);
            let mut buf = PacketBuf::new();
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_with_input(BenchmarkId::new(&name, len), &len, |b, _| {
                b.iter(|| {
                    // Sequence numbers advance by one per packet; 2^32 of
                    // them (no ESN) are far beyond any run's iterations.
                    buf.set(&plain).expect("buffer");
                    let d = a.handle_outbound(&mut buf, Timestamp::ZERO);
                    debug_assert_eq!(d, Disposition::Forward);
                    black_box(d)
                })
            });
            assert_eq!(
                a.counters().total_drops(),
                0,
                "{name}/{len}: packets dropped"
            );
        }
    }
    g.finish();
}

fn bench_decap(c: &mut Criterion) {
    let mut g = c.benchmark_group("esp_decap");
    for (name, transform, backend) in stage_variants() {
        for len in STAGE_SIZES {
            let plain = udp_v4(len);
            let mut a = stage(true, transform, backend, 64);
            // Replay window 0: the same packet is accepted every time.
            let mut b_gw = stage(false, transform, backend, 0);
            let esp = sealed(&mut a, &plain);
            let mut buf = PacketBuf::new();
            buf.set(&esp).expect("buffer");
            let d = b_gw.handle_inbound(&mut buf, Timestamp::ZERO);
            assert_eq!(
                d,
                Disposition::Deliver,
                "{name}/{len}: decapsulation failed"
            );
            assert_eq!(buf.data(), &plain[..], "{name}/{len}: wrong plaintext");
            g.throughput(Throughput::Bytes(len as u64));
            g.bench_with_input(BenchmarkId::new(&name, len), &len, |b, _| {
                b.iter(|| {
                    buf.set(&esp).expect("buffer");
                    let d = b_gw.handle_inbound(&mut buf, Timestamp::ZERO);
                    debug_assert_eq!(d, Disposition::Deliver);
                    black_box(d)
                })
            });
            assert_eq!(
                b_gw.counters().total_drops(),
                0,
                "{name}/{len}: packets dropped"
            );
        }
    }
    g.finish();
}

/// Packets per burst of the probe's `encap-burst` and `decap-burst` (the
/// pipeline's batch).
const PROBE_BURST: usize = 32;

/// `BITSGW_ESP_PROBE=encap:LEN:K` or `decap:LEN:K`: sets up the stage
/// as `esp_encap` / `esp_decap` do for AES-GCM-128 (default backend), then
/// runs `K` of their iterations (the copy into the buffer and the stage
/// call) and exits, without criterion. Under
/// `valgrind --tool=callgrind` with two values of `K`, the difference of
/// the totals divided by the difference of `K` is the instructions of one
/// iteration. `encap-burst` and `decap-burst` do the same through
/// `handle_outbound_burst` and `handle_inbound_burst`, [`PROBE_BURST`]
/// packets at a time.
fn probe(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let usage = || panic!("BITSGW_ESP_PROBE: OPERATION:LEN:K, not {spec:?}");
    let num = |i: usize| -> usize {
        parts
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(usage)
    };
    let (len, k) = (num(1), num(2));
    let (transform, backend) = (TransformId::AesGcm128, GcmBackend::default());
    let plain = udp_v4(len);
    let mut a = stage(true, transform, backend, 64);
    let mut buf = PacketBuf::new();
    let mut forwarded = 0usize;
    match parts[0] {
        "encap" => {
            for _ in 0..k {
                buf.set(&plain).expect("buffer");
                let d = a.handle_outbound(&mut buf, Timestamp::ZERO);
                forwarded += usize::from(d == Disposition::Forward);
            }
        }
        "decap" => {
            let mut b_gw = stage(false, transform, backend, 0);
            let esp = sealed(&mut a, &plain);
            for _ in 0..k {
                buf.set(&esp).expect("buffer");
                let d = b_gw.handle_inbound(&mut buf, Timestamp::ZERO);
                forwarded += usize::from(d == Disposition::Deliver);
            }
        }
        "encap-burst" | "decap-burst" => {
            let decap = parts[0] == "decap-burst";
            let mut b_gw = stage(false, transform, backend, 0);
            let packet = if decap { sealed(&mut a, &plain) } else { plain };
            let mut bufs: Vec<PacketBuf> = (0..PROBE_BURST).map(|_| PacketBuf::new()).collect();
            let mut ds = [Disposition::Held; PROBE_BURST];
            let wanted = if decap {
                Disposition::Deliver
            } else {
                Disposition::Forward
            };
            let mut left = k;
            while left > 0 {
                let n = left.min(PROBE_BURST);
                left -= n;
                let burst = &mut bufs[..n];
                for buf in burst.iter_mut() {
                    buf.set(&packet).expect("buffer");
                }
                let ds = &mut ds[..n];
                if decap {
                    b_gw.handle_inbound_burst(burst, |_| None, Timestamp::ZERO, ds);
                } else {
                    a.handle_outbound_burst(burst, |_| None, Timestamp::ZERO, ds);
                }
                forwarded += ds.iter().filter(|d| **d == wanted).count();
            }
        }
        other => panic!("BITSGW_ESP_PROBE: unknown operation {other:?}"),
    }
    assert_eq!(forwarded, k, "packets dropped");
    println!("{forwarded}");
}

criterion_group!(benches, bench_aead, bench_copy, bench_encap, bench_decap);

fn main() {
    if let Ok(spec) = std::env::var("BITSGW_ESP_PROBE") {
        probe(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
