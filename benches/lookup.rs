//! Per-packet lookups: the SPD index, the SAD by SPI and the anti-replay
//! window.
//!
//! Groups:
//! - `spd_index/<n>`: `SpdIndex::lookup`, the interval classifier alone,
//!   without the flow cache the stage puts in front of it, over `n`
//!   entries of a realistic mix (see [`spd_entry`]) ending in an any/any
//!   entry; each iteration looks up the next of [`SPD_KEYS`] flow keys,
//!   drawn uniformly from all entries (one in 16 matches nothing specific
//!   and falls through to the any/any entry).
//! - `spd_linear/<n>`: the same keys matched by a first-match scan, the
//!   reference the index replaces (small tables only).
//! - `spd_cached/<n>`: `Spd::lookup_and_count`, the stage's per-packet SPD
//!   lookup (flow cache first, the classifier on a miss, the entry's hit
//!   counted), over the same `n` entries, with the cache's default 4096
//!   slots. The [`SPD_KEYS`] keys cycled through are drawn at random from
//!   a working set of [`WORKING_FLOWS`] distinct flows, each aimed at an
//!   entry drawn as for `spd_index` and sent by one of 1024 local hosts,
//!   so hits dominate as on a link with that many active flows. The setup
//!   prints the hit rate it measured on the same stream.
//! - `spd_cached_miss/<n>`: the same call on a cold cache: [`SPD_KEYS`]
//!   distinct flows cycled through the 4096 slots, so every key was
//!   evicted long before it comes back (the setup prints the hit rate,
//!   about 0): the classifier plus a fill, the cost of a flow's first
//!   packet and of a flood of ever new flows.
//! - `sad_by_spi/<n>`, `sad_by_spi_get/<n>`: `Sad::by_spi` for the next of
//!   [`SAD_KEYS`] SPIs drawn uniformly from `n` installed inbound SAs, and
//!   the same followed by `Sad::get` (which touches the SA itself). The SAs
//!   are installed through `IpsecStage::install_sa` before timing starts.
//! - `sad/by_spi_active/<n>`: `Sad::by_spi` with [`SAD_ACTIVE`] of the `n`
//!   SAs carrying the traffic (drawn uniformly once), the next SPI drawn
//!   uniformly from those: the working set of a gateway whose installed SAs
//!   are mostly idle, as against `by_spi`'s 65 536 distinct SPIs.
//! - `replay/in_order/<w>`, `replay/reordered/<w>`:
//!   `ReplayWindow::check_and_update` with window `w` for consecutive
//!   sequence numbers, and for sequence numbers shuffled within blocks of
//!   `w / 2` (every packet lands inside the window and is new, so every
//!   call accepts).
//! - `query/*`: the IPsec query API as the mobility tunnel stage uses it,
//!   on the seed's host-wide mobile node policies: which SA protects "MH BU
//!   from the home address to the home agent" now (`outbound_sa_for_flow`),
//!   which SA and selectors stand behind an SPI (`inbound_sa`), and the
//!   tunnel stage's per-packet classification of an outbound ESP packet
//!   (`classify`, answers cached until the query generation changes).

use bitsgw_ipsec::anti_replay::ReplayWindow;
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::flow_cache::FlowCache;
use bitsgw_ipsec::sa::{Direction, Limits, Mode, SaParams};
use bitsgw_ipsec::selector::{
    proto, Addr, AddrSel, Family, FlowKey, NextLayer, ProtoSel, Range16, Selector,
};
use bitsgw_ipsec::spd::{Action, Spd, SpdEntry};
use bitsgw_ipsec::spd_index::SpdIndex;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_wire::Timestamp;
use criterion::{black_box, criterion_group, BenchmarkId, Criterion};

/// Flow keys cycled through by the SPD benches.
const SPD_KEYS: usize = 16384;
/// Distinct flows of `spd_cached`'s working set.
const WORKING_FLOWS: usize = 1024;
/// SPIs cycled through by the SAD benches.
const SAD_KEYS: usize = 65536;

/// SAs carrying traffic in `sad/by_spi_active`.
const SAD_ACTIVE: usize = 1024;

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn v4(bits: u32) -> Addr {
    Addr {
        family: Family::V4,
        bits: u128::from(bits),
    }
}

fn v6(bits: u128) -> Addr {
    Addr {
        family: Family::V6,
        bits,
    }
}

fn range(a: Addr, len: u128) -> AddrSel {
    AddrSel::Range {
        family: a.family,
        lo: a.bits,
        hi: a.bits + len - 1,
    }
}

fn single(a: Addr) -> AddrSel {
    range(a, 1)
}

const V4_LOCAL_NET: u32 = 0xc0a8_0000; // 192.168.0.0/16
const V6_LOCAL_NET: u128 = 0x2001_0db8_000a_0000 << 64; // 2001:db8:a::/48
const V6_HA: u128 = (0x2001_0db8_ffff_0000 << 64) | 1; // 2001:db8:ffff::1

/// Entry `i` of an SPD (outbound, local = this side). Eight kinds in turn,
/// each kind's `k`-th entry on its own addresses, so no two entries
/// overlap:
/// 0. IPv4 /32 host 10.0.0.0 + k, from 192.168.0.0/16;
/// 1. IPv4 /24 subnet 20.0.0.0 + k * 256, any local;
/// 2. IPv6 /128 host 2001:db8:1::k, from 2001:db8:a::/48;
/// 3. IPv6 /64 subnet 2001:db8:2:k::/64, any local;
/// 4. IPv4 range of 10 addresses at 100.64.0.0 + 16 k, TCP to ports 8000-8099;
/// 5. a home agent's BU entry for a mobile node: local HA 2001:db8:ffff::1,
///    remote home address 2001:db8:3::k, Mobility Header type 5 (BU);
/// 6. IPv4 /32 host 10.128.0.0 + k, UDP to port 53;
/// 7. IPv6 range of 100 addresses at 2001:db8:4::(256 k), any local.
fn spd_entry(i: usize) -> Selector {
    let k = (i / 8) as u32;
    let mut s = Selector::ANY;
    match i % 8 {
        0 => {
            s.local = range(v4(V4_LOCAL_NET), 1 << 16);
            s.remote = single(v4(0x0a00_0000 + k));
        }
        1 => s.remote = range(v4(0x1400_0000 + (k << 8)), 256),
        2 => {
            s.local = range(v6(V6_LOCAL_NET), 1 << 80);
            s.remote = single(v6((0x2001_0db8_0001_0000 << 64) | u128::from(k)));
        }
        3 => {
            s.remote = range(
                v6((0x2001_0db8_0002_0000 << 64) | (u128::from(k) << 64)),
                1 << 64,
            )
        }
        4 => {
            s.remote = range(v4(0x6440_0000 + 16 * k), 10);
            s.proto = ProtoSel::Is(proto::TCP);
            s.remote_ports = Range16 { lo: 8000, hi: 8099 };
        }
        5 => {
            s.local = single(v6(V6_HA));
            s.remote = single(v6((0x2001_0db8_0003_0000 << 64) | u128::from(k)));
            s.proto = ProtoSel::Is(proto::MH);
            s.mh_type = Range16::single(5);
        }
        6 => {
            s.remote = single(v4(0x0a80_0000 + k));
            s.proto = ProtoSel::Is(proto::UDP);
            s.remote_ports = Range16::single(53);
        }
        _ => {
            s.remote = range(
                v6((0x2001_0db8_0004_0000 << 64) | (u128::from(k) << 8)),
                100,
            );
        }
    }
    s
}

/// `n` entries: `n - 1` of [`spd_entry`] and a final any/any.
fn spd(n: usize) -> Vec<Selector> {
    let mut v: Vec<Selector> = (0..n - 1).map(spd_entry).collect();
    v.push(Selector::ANY);
    v
}

/// A flow key that entry `i` (of kind `i % 8`) matches, sent by local
/// host `host` (below 0xfe00) where the entry lets the local address vary.
fn key_for(i: usize, host: u32) -> FlowKey {
    let k = (i / 8) as u32;
    let v4_host = v4(V4_LOCAL_NET | (0x0101 + host));
    let v6_host = v6(V6_LOCAL_NET | (1 + u128::from(host)));
    let ports = |remote| NextLayer::Ports {
        local: 40000,
        remote,
    };
    let (local, remote, p, next) = match i % 8 {
        0 => (v4_host, v4(0x0a00_0000 + k), proto::UDP, ports(443)),
        1 => (
            v4_host,
            v4(0x1400_0000 + (k << 8) + 7),
            proto::TCP,
            ports(22),
        ),
        2 => (
            v6_host,
            v6((0x2001_0db8_0001_0000 << 64) | u128::from(k)),
            proto::UDP,
            ports(4500),
        ),
        3 => (
            v6_host,
            v6((0x2001_0db8_0002_0000 << 64) | (u128::from(k) << 64) | 0xabcd),
            proto::ICMPV6,
            NextLayer::Icmp { ty: 128, code: 0 },
        ),
        4 => (
            v4_host,
            v4(0x6440_0000 + 16 * k + 5),
            proto::TCP,
            ports(8050),
        ),
        5 => (
            v6(V6_HA),
            v6((0x2001_0db8_0003_0000 << 64) | u128::from(k)),
            proto::MH,
            NextLayer::Mh { ty: 5 },
        ),
        6 => (v4_host, v4(0x0a80_0000 + k), proto::UDP, ports(53)),
        _ => (
            v6_host,
            v6((0x2001_0db8_0004_0000 << 64) | (u128::from(k) << 8) | 50),
            proto::TCP,
            ports(80),
        ),
    };
    FlowKey {
        local,
        remote,
        proto: p,
        next,
    }
}

/// Lookup keys for an SPD of `n` entries with the entry each must hit.
fn spd_keys(n: usize, rng: &mut Rng) -> Vec<(FlowKey, usize)> {
    (0..SPD_KEYS).map(|_| draw_key(n, 0, rng)).collect()
}

/// A key from local host `host` aimed at an entry drawn uniformly from an
/// SPD of `n` entries, or (one in 16) at none but the final any/any; with
/// the entry it must hit.
fn draw_key(n: usize, host: u32, rng: &mut Rng) -> (FlowKey, usize) {
    if n == 1 || rng.below(16) == 0 {
        // Matches no specific entry: 8.8.8.8 over UDP.
        let key = FlowKey {
            local: v4(V4_LOCAL_NET | (0x0101 + host)),
            remote: v4(0x0808_0808),
            proto: proto::UDP,
            next: NextLayer::Ports {
                local: 40000,
                remote: 53,
            },
        };
        (key, n - 1)
    } else {
        let i = rng.below(n - 1);
        (key_for(i, host), i)
    }
}

/// `count` distinct flows for an SPD of `n` entries, drawn as
/// [`draw_key`] draws them from `hosts` local hosts, with the entry each
/// must hit.
fn distinct_flows(n: usize, count: usize, hosts: usize, rng: &mut Rng) -> Vec<(FlowKey, usize)> {
    let mut seen = std::collections::HashSet::new();
    let mut flows = Vec::with_capacity(count);
    while flows.len() < count {
        let host = rng.below(hosts) as u32;
        let (key, want) = draw_key(n, host, rng);
        if seen.insert(key) {
            flows.push((key, want));
        }
    }
    flows
}

/// An SPD of `selectors`, every entry BYPASS.
fn bypass_spd(selectors: &[Selector]) -> Spd {
    Spd::new(
        selectors
            .iter()
            .enumerate()
            .map(|(i, s)| SpdEntry {
                name: format!("e{i}").into(),
                selector: *s,
                action: Action::Bypass,
            })
            .collect(),
    )
}

/// Share of the lookups of `stream`, cycled, that a default-sized flow
/// cache answers once warm (the `Spd`'s own cache is the same table with
/// the same hash): the stream is run twice and the second run counted.
fn hit_rate(stream: &[FlowKey]) -> f64 {
    let mut cache = FlowCache::<()>::default();
    let mut hits = 0usize;
    for pass in 0..2 {
        for key in stream {
            if cache.get(key).is_some() {
                hits += pass;
            } else {
                cache.insert(key, ());
            }
        }
    }
    hits as f64 / stream.len().max(1) as f64
}

fn linear(selectors: &[Selector], key: &FlowKey) -> Option<usize> {
    selectors.iter().position(|s| s.matches(key))
}

fn bench_spd(c: &mut Criterion) {
    let mut g = c.benchmark_group("spd_index");
    let mut rng = Rng(0x5eed_0001);
    for n in [10usize, 1_000, 100_000] {
        let selectors = spd(n);
        let index = SpdIndex::new(selectors.clone());
        let keys = spd_keys(n, &mut rng);
        for (key, want) in &keys {
            assert_eq!(index.lookup(key), Some(*want), "{n} entries, {key:?}");
        }
        let keys: Vec<FlowKey> = keys.into_iter().map(|(k, _)| k).collect();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % SPD_KEYS;
                index.lookup(black_box(&keys[i]))
            })
        });
        if n <= 1_000 {
            g.bench_with_input(BenchmarkId::new("linear", n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) % SPD_KEYS;
                    linear(&selectors, black_box(&keys[i]))
                })
            });
        }
    }
    g.finish();
}

fn bench_spd_cached(c: &mut Criterion) {
    spd_cached_group(c, "spd_cached", 0x5eed_0004, |n, rng| {
        let flows = distinct_flows(n, WORKING_FLOWS, 1024, rng);
        (0..SPD_KEYS)
            .map(|_| flows[rng.below(WORKING_FLOWS)])
            .collect()
    });
    spd_cached_group(c, "spd_cached_miss", 0x5eed_0005, |n, rng| {
        distinct_flows(n, SPD_KEYS, SPD_KEYS, rng)
    });
}

/// `<name>/<n>`: `Spd::lookup_and_count` over the keys `make_stream`
/// draws for `n` entries, cycled. Every answer is checked first, and the
/// cache's hit rate on the stream printed.
fn spd_cached_group(
    c: &mut Criterion,
    name: &str,
    seed: u64,
    make_stream: impl Fn(usize, &mut Rng) -> Vec<(FlowKey, usize)>,
) {
    let mut g = c.benchmark_group(name);
    let mut rng = Rng(seed);
    for n in [10usize, 1_000, 100_000] {
        let mut spd = bypass_spd(&spd(n));
        let stream = make_stream(n, &mut rng);
        assert_eq!(stream.len(), SPD_KEYS);
        for (key, want) in &stream {
            assert_eq!(
                spd.lookup_and_count(key),
                Some(*want),
                "{n} entries, {key:?}"
            );
        }
        let keys: Vec<FlowKey> = stream.into_iter().map(|(k, _)| k).collect();
        let distinct = keys.iter().collect::<std::collections::HashSet<_>>().len();
        eprintln!(
            "{name}/{n}: {distinct} distinct flows, cache hit rate {:.2}%",
            hit_rate(&keys) * 100.0
        );
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % SPD_KEYS;
                spd.lookup_and_count(black_box(&keys[i]))
            })
        });
    }
    g.finish();
}

/// A distinct SPI for SA `i` (multiplication by an odd constant is a
/// bijection on `u32`), clear of the reserved values 0 to 255.
fn spi(i: usize) -> u32 {
    ((i as u32).wrapping_mul(0x9e37_79b1) & 0x7fff_ffff) | 0x8000_0000
}

fn sa_params(i: usize) -> SaParams {
    let local = v4(0xcb00_7101);
    SaParams {
        name: format!("sa{i}"),
        direction: Direction::Inbound,
        spi: spi(i),
        mode: Mode::Tunnel {
            local,
            remote: v4(0xc633_6400 + (i as u32 & 0xff)),
        },
        transform: TransformId::AesGcm128,
        backend: Default::default(),
        enc_key: (0..20u8).map(|b| b ^ i as u8).collect::<Vec<u8>>().into(),
        auth_key: Vec::new().into(),
        replay_window: 64,
        esn: false,
        soft: Limits::default(),
        hard: Limits::default(),
        udp_encap: None,
        destination: Some(local),
        negotiated_keys: false,
    }
}

fn bench_sad(c: &mut Criterion) {
    let mut g = c.benchmark_group("sad");
    let mut rng = Rng(0x5eed_0002);
    for n in [10usize, 100_000, 1_000_000] {
        let mut stage = IpsecStage::new(StageConfig::default());
        for i in 0..n {
            stage
                .install_sa(sa_params(i), Timestamp::ZERO)
                .unwrap_or_else(|e| panic!("SA {i}: {e}"));
        }
        assert_eq!(stage.sad().len(), n);
        let spis: Vec<u32> = (0..SAD_KEYS).map(|_| spi(rng.below(n))).collect();
        let sad = stage.sad();
        assert!(spis.iter().all(|s| sad.by_spi(*s).is_some()));
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("by_spi", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % SAD_KEYS;
                sad.by_spi(black_box(spis[i]))
            })
        });
        g.bench_with_input(BenchmarkId::new("by_spi_get", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % SAD_KEYS;
                sad.by_spi(black_box(spis[i]))
                    .and_then(|id| sad.get(id))
                    .map(|sa| sa.spi())
            })
        });
        let active: Vec<u32> = (0..SAD_ACTIVE.min(n)).map(|_| spi(rng.below(n))).collect();
        let stream: Vec<u32> = (0..SAD_KEYS)
            .map(|_| active[rng.below(active.len())])
            .collect();
        g.bench_with_input(BenchmarkId::new("by_spi_active", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % SAD_KEYS;
                sad.by_spi(black_box(stream[i]))
            })
        });
    }
    g.finish();
}

/// Sequence numbers `1..=period` shuffled within consecutive blocks of
/// `block`, so none is displaced by `block` or more.
fn reordered(period: usize, block: usize, rng: &mut Rng) -> Vec<u64> {
    let mut v: Vec<u64> = (1..=period as u64).collect();
    for chunk in v.chunks_mut(block) {
        for j in (1..chunk.len()).rev() {
            chunk.swap(j, rng.below(j + 1));
        }
    }
    v
}

fn bench_replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay");
    let mut rng = Rng(0x5eed_0003);
    const PERIOD: usize = 1 << 16;
    for w in [64u32, 4096] {
        let mut win = ReplayWindow::new(w, false);
        let mut seq = 0u64;
        g.bench_with_input(BenchmarkId::new("in_order", w), &w, |b, _| {
            b.iter(|| {
                seq += 1;
                win.check_and_update(black_box(seq))
            })
        });

        let order = reordered(PERIOD, w as usize / 2, &mut rng);
        let mut win = ReplayWindow::new(w, false);
        for base in [0, PERIOD as u64] {
            for s in &order {
                assert_eq!(win.check_and_update(base + s), Ok(()), "window {w}");
            }
        }
        let mut win = ReplayWindow::new(w, false);
        let (mut base, mut i) = (0u64, 0usize);
        g.bench_with_input(BenchmarkId::new("reordered", w), &w, |b, _| {
            b.iter(|| {
                let r = win.check_and_update(black_box(base + order[i]));
                i += 1;
                if i == PERIOD {
                    i = 0;
                    base += PERIOD as u64;
                }
                r
            })
        });
    }
    g.finish();
}

/// `BITSGW_LOOKUP_PROBE=spd:N:K` or `sad:N:K`: builds the table of `N`
/// entries as the benches do, then does `K` lookups and exits, without
/// criterion. Run under `valgrind --tool=cachegrind --cache-sim=yes` with
/// two values of `K`, the difference divided by the difference of `K` is
/// the instructions and simulated cache misses of one lookup.
fn probe(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |i: usize| -> usize {
        parts
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("BITSGW_LOOKUP_PROBE: spd:N:K or sad:N:K, not {spec:?}"))
    };
    let (n, k) = (num(1), num(2));
    let mut acc = 0usize;
    match parts[0] {
        "spd" => {
            let mut rng = Rng(0x5eed_0001);
            let index = SpdIndex::new(spd(n));
            let keys: Vec<FlowKey> = spd_keys(n, &mut rng).into_iter().map(|(k, _)| k).collect();
            for i in 0..k {
                acc = acc.wrapping_add(index.lookup(black_box(&keys[i % SPD_KEYS])).unwrap_or(0));
            }
        }
        "sad" => {
            let mut rng = Rng(0x5eed_0002);
            let mut stage = IpsecStage::new(StageConfig::default());
            for i in 0..n {
                stage
                    .install_sa(sa_params(i), Timestamp::ZERO)
                    .unwrap_or_else(|e| panic!("SA {i}: {e}"));
            }
            let spis: Vec<u32> = (0..SAD_KEYS).map(|_| spi(rng.below(n))).collect();
            let sad = stage.sad();
            for i in 0..k {
                acc = acc.wrapping_add(
                    sad.by_spi(black_box(spis[i % SAD_KEYS]))
                        .map_or(0, |id| id.index()),
                );
            }
        }
        other => panic!("BITSGW_LOOKUP_PROBE: unknown table {other:?}"),
    }
    println!("{acc}");
}

fn bench_query(c: &mut Criterion) {
    use bitsgw_mobility::classify::ClassifierMode;
    use bitsgw_mobility::tunnel::{MnPaths, MnTunnel, Path};
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/dsmip-hostwide-mn.json");
    let text = std::fs::read_to_string(&path).expect("policy file");
    let set = bitsgw_ipsec::config::parse_policy(&text, "dsmip-hostwide-mn.json").expect("policy");
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).expect("apply");
    let hoa = 0x2001_0db8_0001_0000_0000_0000_0000_0100u128;
    let ha = 0x2001_0db8_0001_0000_0000_0000_0000_0001u128;
    let bu = FlowKey {
        local: v6(hoa),
        remote: v6(ha),
        proto: proto::MH,
        next: NextLayer::Mh { ty: 5 },
    };
    let q = stage.query();
    let bu_spi = q.outbound_sa_for_flow(&bu).expect("the BU SA").spi;
    assert_eq!(bu_spi, 0x2001);
    let mut g = c.benchmark_group("query");
    g.bench_function("outbound_sa_for_flow", |b| {
        b.iter(|| black_box(q.outbound_sa_for_flow(black_box(&bu)).map(|s| s.spi)))
    });
    g.bench_function("inbound_sa", |b| {
        b.iter(|| black_box(q.inbound_sa(black_box(0x2002)).map(|s| s.selectors.len())))
    });
    let paths = MnPaths {
        home: hoa.to_be_bytes(),
        ha: ha.to_be_bytes(),
        ha_v4: None,
        active: Some(Path::V6 {
            coa: [0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        }),
        registering: None,
        own_bu: false,
    };
    let mut tunnel = MnTunnel::default();
    let spis = [0x2001u32, 0x2007, 0x2009, 0x2003];
    let mut i = 0usize;
    g.bench_function("classify", |b| {
        b.iter(|| {
            i = (i + 1) & 3;
            black_box(tunnel.classify(&q, &paths, spis[i], ClassifierMode::Api))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_spd,
    bench_spd_cached,
    bench_sad,
    bench_replay,
    bench_query
);

fn main() {
    if let Ok(spec) = std::env::var("BITSGW_LOOKUP_PROBE") {
        probe(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
