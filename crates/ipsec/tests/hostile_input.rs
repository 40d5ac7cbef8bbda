//! Hostile input: the IP parser, the IPsec stage and the policy parser take
//! arbitrary and mutated bytes without panicking, and every packet the
//! stage refuses is counted under exactly the reason it returns.
//!
//! The valid material the mutations start from is built once: ESP packets
//! from stage pairs of every transform in several modes, families and
//! encapsulations; ESP packets sealed by hand around hostile plaintext (so
//! the checks after the ICV see it); fragments of protected packets; the
//! policy files in `policies/`.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::config::{parse_policy, PolicySet};
use bitsgw_ipsec::counters::StageCounters;
use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId};
use bitsgw_ipsec::{Disposition, DropReason, IpsecStage, StageConfig};
use bitsgw_wire::{ip, PacketBuf, Timestamp};
use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

const T0: Timestamp = Timestamp::ZERO;

// ----------------------------------------------------------------------
// Fixtures
// ----------------------------------------------------------------------

/// One side of a pair, ready to be instantiated per case.
struct Side {
    set: PolicySet,
    cfg: StageConfig,
}

impl Side {
    fn stage(&self) -> IpsecStage {
        let mut s = IpsecStage::new(self.cfg.clone());
        self.set.apply(&mut s, T0).unwrap();
        s
    }
}

struct SpecFixture {
    spec: PairSpec,
    a: Side,
    b: Side,
    /// Cleartext packets A protects.
    clear: Vec<Vec<u8>>,
    /// What A sent for them; B accepts each.
    wire: Vec<Wire>,
    /// Fragments of one protected packet too big for the MTU, if the spec
    /// fragments (IPv4 inner packets without DF).
    frags: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct Wire {
    pkt: Vec<u8>,
    /// Offset of the ESP header.
    esp_off: usize,
    /// Offset of the UDP header (ESP-in-UDP).
    udp_off: Option<usize>,
}

struct Fixture {
    specs: Vec<SpecFixture>,
}

fn side(spec: &PairSpec, a: bool) -> Side {
    let text = spec.policy(a);
    let set = parse_policy(&text, "pair.json").unwrap();
    let mut cfg = StageConfig::default();
    if let Some((pa, pb)) = spec.udp_encap {
        cfg.udp_encap_ports.extend([pa, pb]);
    }
    Side { set, cfg }
}

fn wire_of(pkt: Vec<u8>) -> Wire {
    let meta = ip::parse(&pkt).unwrap();
    let (esp_off, udp_off) = if meta.proto == 17 {
        (meta.header_len + 8, Some(meta.header_len))
    } else {
        (meta.header_len, None)
    };
    Wire {
        pkt,
        esp_off,
        udp_off,
    }
}

/// A UDP packet without DF, so a protected copy too big for the MTU is
/// fragmented rather than refused.
fn udp_no_df(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut udp = vec![0u8; 8 + len];
    udp[0..2].copy_from_slice(&1111u16.to_be_bytes());
    udp[2..4].copy_from_slice(&2222u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    ip_packet(src, dst, 17, &udp, false)
}

/// (tunnel, inner_v6, outer_v6, udp_encap, esn)
type Shape = (bool, bool, bool, Option<(u16, u16)>, bool);

fn specs() -> Vec<PairSpec> {
    let shapes: [Shape; 5] = [
        (true, false, false, None, false),
        (true, true, false, Some((4500, 4500)), true),
        (true, false, true, Some((4501, 14500)), false),
        (false, true, true, None, true),
        (false, false, false, Some((4500, 4500)), false),
    ];
    let mut out = Vec::new();
    for transform in transforms() {
        for (tunnel, inner_v6, outer_v6, udp_encap, esn) in shapes {
            out.push(PairSpec {
                transform,
                tunnel,
                inner_v6,
                outer_v6,
                udp_encap,
                esn,
                ..PairSpec::default()
            });
        }
    }
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let specs = specs()
            .into_iter()
            .map(|spec| {
                let a = side(&spec, true);
                let b = side(&spec, false);
                let mut sa = a.stage();
                let (ha, hb) = spec.inner();
                let mut clear = Vec::new();
                let mut wire = Vec::new();
                for len in [0, 7, 64] {
                    let pkt = udp_packet(ha, hb, 1111, 2222, len);
                    let mut buf = PacketBuf::from_slice(&pkt);
                    assert_eq!(sa.handle_outbound(&mut buf, T0), Disposition::Forward);
                    wire.push(wire_of(buf.data().to_vec()));
                    clear.push(pkt);
                }
                let mut frags = Vec::new();
                if !spec.inner_v6 {
                    let mut buf = PacketBuf::from_slice(&udp_no_df(ha, hb, 2400));
                    if let Disposition::Fragmented(n) = sa.handle_outbound(&mut buf, T0) {
                        let mut out = PacketBuf::new();
                        for _ in 0..n {
                            assert!(sa.poll_transmit(&mut out));
                            frags.push(out.data().to_vec());
                        }
                    }
                }
                SpecFixture {
                    spec,
                    a,
                    b,
                    clear,
                    wire,
                    frags,
                }
            })
            .collect();
        Fixture { specs }
    })
}

/// Seals `body` (payload, padding, pad length and next header, as the
/// caller chose them) into an authentic ESP packet for B's inbound SA and
/// wraps it the way the spec's SA expects. Bodies a CBC transform can not
/// seal (not block aligned) are sent with a zero ICV.
fn sealed(spec: &PairSpec, seq: u32, body: &[u8]) -> Vec<u8> {
    let id = TransformId::from_name(spec.transform).unwrap();
    let enc = hex::decode(&key_for(spec.transform, "enc")[2..]).unwrap();
    let auth = if id.auth_key_len() > 0 {
        hex::decode(&key_for(spec.transform, "auth")[2..]).unwrap()
    } else {
        Vec::new()
    };
    let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &auth).unwrap();
    let mut esp = Vec::new();
    esp.extend_from_slice(&0x1001u32.to_be_bytes());
    esp.extend_from_slice(&seq.to_be_bytes());
    esp.resize(esp.len() + id.iv_len(), 0);
    esp.extend_from_slice(body);
    esp.resize(esp.len() + id.icv_len(), 0);
    let _ = t.seal(&mut esp, u64::from(seq), spec.esn);
    let (oa, ob) = spec.outer();
    match spec.udp_encap {
        Some((pa, pb)) => {
            let mut udp = Vec::with_capacity(8 + esp.len());
            udp.extend_from_slice(&pa.to_be_bytes());
            udp.extend_from_slice(&pb.to_be_bytes());
            udp.extend_from_slice(&((8 + esp.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(&esp);
            ip_packet(oa, ob, 17, &udp, false)
        }
        None => ip_packet(oa, ob, 50, &esp, false),
    }
}

// ----------------------------------------------------------------------
// Mutations
// ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Spi(u32),
    IpLen(u16),
    UdpLen(u16),
    /// Makes the IP length field agree with the bytes there are, so the
    /// packet gets past the IP parser after a truncation or extension.
    FixIpLen,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        3 => any::<Index>().prop_map(Mutation::Truncate),
        2 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        2 => prop_oneof![Just(0x1001u32), Just(0x2002), Just(0), any::<u32>()].prop_map(Mutation::Spi),
        2 => any::<u16>().prop_map(Mutation::IpLen),
        1 => any::<u16>().prop_map(Mutation::UdpLen),
        3 => Just(Mutation::FixIpLen),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..5)
}

fn apply(pkt: &mut Vec<u8>, m: &Mutation, esp_off: Option<usize>, udp_off: Option<usize>) {
    let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
    match m {
        Mutation::Flip(i, mask) if !pkt.is_empty() => {
            let at = i.index(pkt.len());
            pkt[at] ^= mask;
        }
        Mutation::Set(i, v) if !pkt.is_empty() => {
            let at = i.index(pkt.len());
            pkt[at] = *v;
        }
        Mutation::Truncate(i) => pkt.truncate(i.index(pkt.len() + 1)),
        Mutation::Extend(tail) => pkt.extend_from_slice(tail),
        Mutation::Spi(spi) => {
            if let Some(s) = esp_off.and_then(|o| pkt.get_mut(o..o + 4)) {
                s.copy_from_slice(&spi.to_be_bytes());
            }
        }
        Mutation::IpLen(len) => {
            let at = if v6 { 4 } else { 2 };
            if let Some(s) = pkt.get_mut(at..at + 2) {
                s.copy_from_slice(&len.to_be_bytes());
            }
        }
        Mutation::UdpLen(len) => {
            if let Some(s) = udp_off.and_then(|o| pkt.get_mut(o + 4..o + 6)) {
                s.copy_from_slice(&len.to_be_bytes());
            }
        }
        Mutation::FixIpLen => {
            let len = pkt.len();
            ip::set_total_len(pkt, len);
        }
        _ => {}
    }
}

fn mutate(pkt: &[u8], ms: &[Mutation], esp_off: Option<usize>, udp_off: Option<usize>) -> Vec<u8> {
    let mut p = pkt.to_vec();
    for m in ms {
        apply(&mut p, m, esp_off, udp_off);
    }
    p
}

// ----------------------------------------------------------------------
// The invariant on every result of the stage
// ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

fn drop_deltas(before: &StageCounters, after: &StageCounters) -> Vec<(DropReason, u64)> {
    DropReason::ALL
        .iter()
        .map(|r| (*r, after.drops(*r) - before.drops(*r)))
        .filter(|(_, n)| *n != 0)
        .collect()
}

fn is_fragment_reason(r: DropReason) -> bool {
    matches!(
        r,
        DropReason::FragMalformed
            | DropReason::FragOverlap
            | DropReason::FragTooLarge
            | DropReason::FragMemory
            | DropReason::FragTooMany
            | DropReason::FragTimeout
            | DropReason::NoBufferRoom
    )
}

/// Runs one packet through `stage` and checks that the result fits the
/// direction, that exactly the returned drop reason was counted (once),
/// and that packets passed on are well-formed IP.
fn run(stage: &mut IpsecStage, dir: Dir, pkt: &[u8], now: Timestamp) -> Disposition {
    let before = stage.counters().clone();
    let mut buf = PacketBuf::from_slice(pkt);
    let d = match dir {
        Dir::In => stage.handle_inbound(&mut buf, now),
        Dir::Out => stage.handle_outbound(&mut buf, now),
    };
    let after = stage.counters().clone();
    // Once time has moved on, a fragment may also expire fragments held
    // for its datagram: those are counted as timeouts on top.
    let drops: Vec<_> = drop_deltas(&before, &after)
        .into_iter()
        .filter(|(r, _)| !(now > T0 && *r == DropReason::FragTimeout))
        .collect();
    let ctx = || format!("{dir:?} {d:?} drops {drops:?} packet {}", hex::encode(pkt));
    match d {
        // A fragment that ends its datagram (an overlap, the memory limit)
        // takes the held fragments with it: all are counted, under its reason.
        Disposition::Drop(r) if is_fragment_reason(r) => {
            assert!(
                matches!(drops.as_slice(), [(q, n)] if *q == r && *n >= 1),
                "{}",
                ctx()
            )
        }
        Disposition::Drop(r) => assert_eq!(drops, vec![(r, 1)], "{}", ctx()),
        Disposition::IcmpError => {
            assert_eq!(dir, Dir::Out, "{}", ctx());
            assert_eq!(drops, vec![(DropReason::TooBig, 1)], "{}", ctx());
            assert!(ip::parse(buf.data()).is_ok(), "{}", ctx());
        }
        _ => assert!(drops.is_empty(), "{}", ctx()),
    }
    match d {
        Disposition::Forward => {
            assert_eq!(dir, Dir::Out, "{}", ctx());
            let n = (after.outbound_protected + after.outbound_bypassed)
                - (before.outbound_protected + before.outbound_bypassed);
            assert_eq!(n, 1, "{}", ctx());
            let m = ip::parse(buf.data()).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
            assert_eq!(m.total_len, buf.len(), "{}", ctx());
        }
        Disposition::Deliver => {
            assert_eq!(dir, Dir::In, "{}", ctx());
            let n = (after.inbound_decrypted + after.inbound_bypassed)
                - (before.inbound_decrypted + before.inbound_bypassed);
            assert_eq!(n, 1, "{}", ctx());
            let m = ip::parse(buf.data()).unwrap_or_else(|e| panic!("{e}: {}", ctx()));
            assert_eq!(m.total_len, buf.len(), "{}", ctx());
        }
        Disposition::Held => {
            assert_eq!(dir, Dir::In, "{}", ctx());
            assert_eq!(after.fragments_held - before.fragments_held, 1, "{}", ctx());
        }
        Disposition::ToIke => {
            assert_eq!(dir, Dir::In, "{}", ctx());
            assert_eq!(after.ike_passed - before.ike_passed, 1, "{}", ctx());
        }
        Disposition::Fragmented(n) => {
            assert_eq!(dir, Dir::Out, "{}", ctx());
            assert_eq!(after.outbound_protected - before.outbound_protected, 1);
            assert_eq!(after.fragments_sent - before.fragments_sent, n as u64);
            let mut out = PacketBuf::new();
            for _ in 0..n {
                assert!(stage.poll_transmit(&mut out), "{}", ctx());
                assert!(ip::parse(out.data()).is_ok(), "{}", ctx());
            }
            assert!(!stage.poll_transmit(&mut out), "{}", ctx());
        }
        Disposition::Drop(_) | Disposition::IcmpError => {}
    }
    d
}

// ----------------------------------------------------------------------
// The IP parser
// ----------------------------------------------------------------------

fn check_ip(bytes: &[u8]) {
    if let Ok(m) = ip::parse(bytes) {
        assert!(m.header_len <= m.total_len, "{m:?}");
        assert!(m.total_len <= bytes.len(), "{m:?}");
        assert!(m.proto_field < m.header_len.max(10), "{m:?}");
    }
}

/// Plausible starting points: IPv4 with options, IPv6 with an extension
/// header chain, fragments of both.
fn ip_seeds() -> Vec<Vec<u8>> {
    let a4: IpAddr = "192.0.2.1".parse().unwrap();
    let b4: IpAddr = "198.51.100.1".parse().unwrap();
    let a6: IpAddr = "2001:db8::1".parse().unwrap();
    let b6: IpAddr = "2001:db8::2".parse().unwrap();
    let mut v = vec![
        udp_packet(a4, b4, 1, 2, 12),
        udp_packet(a6, b6, 1, 2, 12),
        ip_packet(a4, b4, 50, &[0, 0, 0x10, 1, 0, 0, 0, 1, 9, 9, 9, 9], true),
    ];
    // IPv4 with 8 bytes of options (NOPs and End of Options).
    let mut opts = udp_packet(a4, b4, 1, 2, 4);
    opts[0] = 0x47;
    opts.splice(20..20, [1, 1, 1, 1, 1, 1, 1, 0]);
    let len = opts.len() as u16;
    ip::ipv4_set_total_len(&mut opts, len);
    v.push(opts);
    // IPv6: Hop-by-Hop, Routing, Destination Options, Fragment, UDP.
    let mut chain = vec![
        43, 0, 1, 4, 0, 0, 0, 0, // HbH -> Routing
        60, 0, 0, 0, 0, 0, 0, 0, // Routing -> DestOpts
        44, 0, 1, 4, 0, 0, 0, 0, // DestOpts -> Fragment
        17, 0, 0, 1, 0, 0, 0, 7, // Fragment (offset 0, M) -> UDP
    ];
    chain.extend_from_slice(&[0, 1, 0, 2, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut p6 = ip_packet(a6, b6, 0, &chain, false);
    v.push(p6.clone());
    // A later IPv6 fragment.
    p6[40 + 24 + 2..40 + 24 + 4].copy_from_slice(&[0, 0x18]);
    v.push(p6);
    // A later IPv4 fragment.
    let mut f4 = udp_packet(a4, b4, 1, 2, 16);
    f4[6] = 0x20;
    f4[7] = 0x03;
    v.push(f4);
    v
}

fn ip_seeds_cached() -> &'static [Vec<u8>] {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(ip_seeds)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 50_000, ..ProptestConfig::default() })]

    #[test]
    fn ip_parse_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128),
                                version in prop_oneof![Just(None), Just(Some(0x45u8)), Just(Some(0x60u8))]) {
        let mut bytes = bytes;
        if let (Some(v), Some(b)) = (version, bytes.first_mut()) {
            *b = v;
        }
        check_ip(&bytes);
    }

    #[test]
    fn ip_parse_mutated_headers(seed in any::<Index>(), ms in mutations()) {
        let seeds = ip_seeds_cached();
        let p = mutate(&seeds[seed.index(seeds.len())], &ms, None, None);
        check_ip(&p);
    }
}

// ----------------------------------------------------------------------
// The stage, inbound and outbound
// ----------------------------------------------------------------------

fn pick(i: &Index) -> &'static SpecFixture {
    let f = fixture();
    &f.specs[i.index(f.specs.len())]
}

/// What a hand-sealed body holds.
#[derive(Debug, Clone)]
enum Body {
    /// Arbitrary bytes: pad length and next header included.
    Raw(Vec<u8>),
    /// One of the spec's cleartext packets, mutated, with a padding of
    /// `pad` bytes (correct or not), and a next header.
    Inner {
        which: Index,
        ms: Vec<Mutation>,
        pad: Vec<u8>,
        pad_len: Option<u8>,
        next: Option<u8>,
    },
    /// ESP inside ESP, `depth` layers (tunnel mode only; deeper than the
    /// stage unwraps at 5).
    Nested { depth: usize },
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..96).prop_map(Body::Raw),
        6 => (
            any::<Index>(),
            proptest::collection::vec(mutation(), 0..3),
            prop_oneof![Just(Vec::new()), Just(vec![1, 2, 3]), proptest::collection::vec(any::<u8>(), 0..20)],
            prop_oneof![3 => Just(None), 1 => any::<u8>().prop_map(Some)],
            prop_oneof![3 => Just(None), 1 => prop_oneof![Just(59u8), Just(4), Just(41), Just(50), any::<u8>()].prop_map(Some)],
        )
            .prop_map(|(which, ms, pad, pad_len, next)| Body::Inner { which, ms, pad, pad_len, next }),
        1 => (1usize..7).prop_map(|depth| Body::Nested { depth }),
    ]
}

fn next_header_for(spec: &PairSpec, inner: &[u8]) -> u8 {
    if spec.tunnel {
        if inner.first().is_some_and(|b| b >> 4 == 6) {
            41
        } else {
            4
        }
    } else {
        17
    }
}

/// The ESP body of a transport-mode packet is the upper layer only.
fn transport_payload(spec: &PairSpec, pkt: &[u8]) -> Vec<u8> {
    if spec.tunnel {
        return pkt.to_vec();
    }
    let hl = if spec.inner_v6 { 40 } else { 20 };
    pkt.get(hl..).unwrap_or(&[]).to_vec()
}

fn build_body(f: &SpecFixture, b: &Body, seq: u32) -> Vec<u8> {
    match b {
        Body::Raw(bytes) => bytes.clone(),
        Body::Inner {
            which,
            ms,
            pad,
            pad_len,
            next,
        } => {
            let clear = &f.clear[which.index(f.clear.len())];
            let inner = transport_payload(&f.spec, &mutate(clear, ms, None, None));
            let mut body = inner.clone();
            body.extend_from_slice(pad);
            body.push(pad_len.unwrap_or(pad.len() as u8));
            body.push(next.unwrap_or_else(|| next_header_for(&f.spec, clear)));
            body
        }
        Body::Nested { depth } => {
            // Innermost: one of the clear packets, then wrapped `depth`
            // times, each layer with its own sequence number.
            let mut inner = f.clear[0].clone();
            for layer in 0..*depth {
                let nh = next_header_for(&f.spec, &inner);
                let mut body = inner;
                let id = TransformId::from_name(f.spec.transform).unwrap();
                let pad = id.pad_len(body.len());
                body.extend((1..=pad).map(|i| i as u8));
                body.push(pad as u8);
                body.push(nh);
                inner = sealed(&f.spec, seq + 1 + layer as u32, &body);
            }
            let id = TransformId::from_name(f.spec.transform).unwrap();
            let nh = next_header_for(&f.spec, &inner);
            let pad = id.pad_len(inner.len());
            inner.extend((1..=pad).map(|i| i as u8));
            inner.push(pad as u8);
            inner.push(nh);
            inner
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn inbound_arbitrary_bytes(which in any::<Index>(),
                               bytes in proptest::collection::vec(any::<u8>(), 0..160),
                               version in prop_oneof![Just(None), Just(Some(0x45u8)), Just(Some(0x60u8))]) {
        let f = pick(&which);
        let mut bytes = bytes;
        if let (Some(v), Some(b)) = (version, bytes.first_mut()) {
            *b = v;
        }
        let mut b = f.b.stage();
        let _ = run(&mut b, Dir::In, &bytes, T0);
    }

    #[test]
    fn outbound_arbitrary_bytes(which in any::<Index>(),
                                bytes in proptest::collection::vec(any::<u8>(), 0..160),
                                version in prop_oneof![Just(None), Just(Some(0x45u8)), Just(Some(0x60u8))]) {
        let f = pick(&which);
        let mut bytes = bytes;
        if let (Some(v), Some(b)) = (version, bytes.first_mut()) {
            *b = v;
        }
        let mut a = f.a.stage();
        let _ = run(&mut a, Dir::Out, &bytes, T0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30_000, ..ProptestConfig::default() })]

    /// Valid ESP from the peer, mutated; fed twice so the replay path runs
    /// on whatever got through.
    #[test]
    fn inbound_mutated_esp(which in any::<Index>(), pkt in any::<Index>(), ms in mutations()) {
        let f = pick(&which);
        let w = &f.wire[pkt.index(f.wire.len())];
        let p = mutate(&w.pkt, &ms, Some(w.esp_off), w.udp_off);
        let mut b = f.b.stage();
        let first = run(&mut b, Dir::In, &p, T0);
        let decrypted = b.counters().inbound_decrypted;
        let second = run(&mut b, Dir::In, &p, T0);
        if first == Disposition::Deliver && decrypted == 1 {
            prop_assert_eq!(second, Disposition::Drop(DropReason::ReplayDuplicate));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Authentic ESP around hostile plaintext: the checks after the ICV
    /// (padding, next header, inner packet, selectors, nesting).
    #[test]
    fn inbound_authentic_hostile_plaintext(which in any::<Index>(), seq in prop_oneof![Just(0u32), 1u32..100, any::<u32>()],
                                           body in body(), ms in proptest::collection::vec(mutation(), 0..2)) {
        let f = pick(&which);
        let esp_body = build_body(f, &body, seq);
        let pkt = sealed(&f.spec, seq, &esp_body);
        let w = wire_of(pkt);
        let p = mutate(&w.pkt, &ms, Some(w.esp_off), w.udp_off);
        let mut b = f.b.stage();
        let _ = run(&mut b, Dir::In, &p, T0);
    }

    /// Cleartext from the protected side, mutated, and of every size up to
    /// past the MTU (ICMP errors, fragmentation after protection).
    #[test]
    fn outbound_mutated_cleartext(which in any::<Index>(), pkt in any::<Index>(), ms in mutations(),
                                  grow in prop_oneof![3 => Just(0usize), 1 => 0usize..3000]) {
        let f = pick(&which);
        let mut p = f.clear[pkt.index(f.clear.len())].clone();
        if grow > 0 {
            p.resize(p.len() + grow, 0x5a);
            let len = p.len();
            ip::set_total_len(&mut p, len);
        }
        let p = mutate(&p, &ms, None, None);
        let mut a = f.a.stage();
        let _ = run(&mut a, Dir::Out, &p, T0);
    }
}

/// The hand-sealed bodies reach the checks after the ICV: each of these
/// outcomes shows up in a fixed sample.
#[test]
fn authentic_bodies_reach_the_checks_after_the_icv() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (any::<Index>(), prop_oneof![Just(0u32), 1u32..100], body());
    let mut seen = Vec::new();
    for _ in 0..3000 {
        let (which, seq, body) = strategy.new_tree(&mut runner).unwrap().current();
        let f = pick(&which);
        let pkt = sealed(&f.spec, seq, &build_body(f, &body, seq));
        let mut b = f.b.stage();
        let d = run(&mut b, Dir::In, &pkt, T0);
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    for want in [
        Disposition::Deliver,
        Disposition::Drop(DropReason::BadPadding),
        Disposition::Drop(DropReason::BadPadLength),
        Disposition::Drop(DropReason::DummyPacket),
        Disposition::Drop(DropReason::BadInnerPacket),
        Disposition::Drop(DropReason::InnerSelectorMismatch),
        Disposition::Drop(DropReason::TooDeep),
        Disposition::Drop(DropReason::ReplayZero),
    ] {
        assert!(seen.contains(&want), "{want:?} never seen: {seen:?}");
    }
}

/// Every valid ESP packet truncated at every length, as received and with
/// the IP length field made to match (so the ESP checks see it).
#[test]
fn inbound_truncated_at_every_length() {
    let mut cases = 0;
    for f in &fixture().specs {
        let mut b = f.b.stage();
        for w in &f.wire {
            for len in 0..w.pkt.len() {
                let mut p = w.pkt[..len].to_vec();
                let _ = run(&mut b, Dir::In, &p, T0);
                ip::set_total_len(&mut p, len);
                if let Some(udp) = w.udp_off {
                    if len >= udp + 6 {
                        let ulen = (len - udp) as u16;
                        p[udp + 4..udp + 6].copy_from_slice(&ulen.to_be_bytes());
                    }
                }
                let d = run(&mut b, Dir::In, &p, T0);
                assert_ne!(d, Disposition::Deliver, "{}", hex::encode(&p));
                cases += 2;
            }
            // Whole, then again (a replay).
            assert_eq!(run(&mut b, Dir::In, &w.pkt, T0), Disposition::Deliver);
            assert_eq!(
                run(&mut b, Dir::In, &w.pkt, T0),
                Disposition::Drop(DropReason::ReplayDuplicate)
            );
        }
    }
    assert!(cases > 10_000, "{cases}");
}

// ----------------------------------------------------------------------
// Fragments
// ----------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RandomFrag {
    v6: bool,
    ident: u8,
    offset_units: u16,
    more: bool,
    proto: u8,
    data: Vec<u8>,
    dest_opts: bool,
}

fn random_frag() -> impl Strategy<Value = RandomFrag> {
    (
        any::<bool>(),
        0u8..3,
        prop_oneof![3 => 0u16..8, 1 => 0u16..8192],
        any::<bool>(),
        prop_oneof![Just(50u8), Just(17), Just(44), any::<u8>()],
        prop_oneof![
            3 => (1usize..6).prop_map(|n| vec![0xa5; n * 8]),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(v6, ident, offset_units, more, proto, data, dest_opts)| RandomFrag {
                v6,
                ident,
                offset_units,
                more,
                proto,
                data,
                dest_opts,
            },
        )
}

fn build_frag(r: &RandomFrag) -> Vec<u8> {
    let (oa, ob) = if r.v6 {
        (
            "2001:db8:ffff::a".parse().unwrap(),
            "2001:db8:ffff::b".parse().unwrap(),
        )
    } else {
        (
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
        )
    };
    if r.v6 {
        let mut ext = Vec::new();
        let first = if r.dest_opts {
            ext.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
            60
        } else {
            44
        };
        let off = (r.offset_units << 3) | u16::from(r.more);
        ext.push(r.proto);
        ext.push(0);
        ext.extend_from_slice(&off.to_be_bytes());
        ext.extend_from_slice(&u32::from(r.ident).to_be_bytes());
        ext.extend_from_slice(&r.data);
        ip_packet(oa, ob, first, &ext, false)
    } else {
        let mut p = ip_packet(oa, ob, r.proto, &r.data, false);
        let ff = (r.offset_units & 0x1fff) | if r.more { 0x2000 } else { 0 };
        p[4..6].copy_from_slice(&u16::from(r.ident).to_be_bytes());
        p[6..8].copy_from_slice(&ff.to_be_bytes());
        ip::ipv4_fill_checksum(&mut p);
        p
    }
}

#[derive(Debug, Clone)]
enum FragOp {
    Real(Index, Vec<Mutation>),
    Random(RandomFrag),
    /// Time moves on by this many seconds before the next fragment.
    Wait(u8),
}

fn frag_op() -> impl Strategy<Value = FragOp> {
    prop_oneof![
        5 => (any::<Index>(), proptest::collection::vec(mutation(), 0..2)).prop_map(|(i, m)| FragOp::Real(i, m)),
        4 => random_frag().prop_map(FragOp::Random),
        1 => prop_oneof![Just(1u8), Just(61), any::<u8>()].prop_map(FragOp::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6_000, ..ProptestConfig::default() })]

    /// Sequences of fragments: those of a real protected packet (reordered,
    /// duplicated, mutated) mixed with random ones that share their keys.
    #[test]
    fn inbound_fragment_sequences(which in any::<Index>(), ops in proptest::collection::vec(frag_op(), 1..24)) {
        let fx = fixture();
        let with_frags: Vec<&SpecFixture> = fx.specs.iter().filter(|f| !f.frags.is_empty()).collect();
        let f = with_frags[which.index(with_frags.len())];
        let mut b = f.b.stage();
        let mut now = T0;
        for op in &ops {
            match op {
                FragOp::Real(i, ms) => {
                    let p = mutate(&f.frags[i.index(f.frags.len())], ms, None, None);
                    let _ = run(&mut b, Dir::In, &p, now);
                }
                FragOp::Random(r) => {
                    let _ = run(&mut b, Dir::In, &build_frag(r), now);
                }
                FragOp::Wait(s) => {
                    now = now.saturating_add(Duration::from_secs(u64::from(*s)));
                    if *s % 2 == 0 {
                        b.handle_timeout(now);
                    }
                }
            }
        }
    }
}

/// The real fragments in order, then in reverse, reassemble and decrypt.
#[test]
fn real_fragments_reassemble_in_any_order() {
    let mut checked = 0;
    for f in fixture().specs.iter().filter(|f| !f.frags.is_empty()) {
        for reverse in [false, true] {
            let mut b = f.b.stage();
            let mut frags = f.frags.clone();
            if reverse {
                frags.reverse();
            }
            let last = frags.pop().unwrap();
            for p in &frags {
                assert_eq!(run(&mut b, Dir::In, p, T0), Disposition::Held);
            }
            assert_eq!(run(&mut b, Dir::In, &last, T0), Disposition::Deliver);
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked}");
}

// ----------------------------------------------------------------------
// Policy files
// ----------------------------------------------------------------------

fn policy_files() -> &'static [(String, Value)] {
    static P: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    P.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                out.push((path.display().to_string(), v));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(out.len() >= 4);
        // A pair file has the fields the shipped files may not use.
        out.push((
            "pair.json".into(),
            serde_json::from_str(&PairSpec::default().policy(true)).unwrap(),
        ));
        out
    })
}

const FIELD_NAMES: &[&str] = &[
    "name",
    "local",
    "remote",
    "proto",
    "local_port",
    "remote_port",
    "mh_type",
    "icmp_type",
    "action",
    "sa",
    "direction",
    "spi",
    "mode",
    "tunnel",
    "transform",
    "enc_key",
    "auth_key",
    "replay_window",
    "esn",
    "lifetime",
    "soft",
    "hard",
    "seconds",
    "bytes",
    "packets",
    "udp_encap",
    "backend",
    "destination",
    "addresses",
    "spd",
    "sad",
    "outbound",
    "inbound",
    "comment",
    "nme",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(63),
            Just(64),
            Just(65),
            Just(255),
            Just(256),
            Just(65535),
            Just(65536),
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(""),
            Just("any"),
            Just("0x"),
            Just("0x1"),
            Just("0xzz"),
            Just("0x0"),
            Just("0xffffffffffffffffff"),
            Just("192.0.2.1"),
            Just("192.0.2.0/33"),
            Just("192.0.2.9-192.0.2.1"),
            Just("2001:db8::/129"),
            Just("2001:db8::1"),
            Just("::/0"),
            Just("0.0.0.0/0"),
            Just("1-0"),
            Just("0-65535"),
            Just("65536"),
            Just("-1"),
            Just("tunnel"),
            Just("transport"),
            Just("protect"),
            Just("bypass"),
            Just("discard"),
            Just("inbound"),
            Just("outbound"),
            Just("aes-gcm-128"),
            Just("aes-cbc-128-hmac-sha256"),
            Just("null-hmac-sha256"),
            Just("ring"),
            Just("home_address_1"),
            Just("home_agent_1"),
            Just("mh"),
            Just("bu"),
            Just("icmpv6"),
            Just("udp"),
            Just("133-137"),
            Just("\u{0}"),
            Just("é"),
        ]
        .prop_map(|s| Value::String(s.into())),
        "\\PC{0,24}".prop_map(Value::String),
        Just(Value::String("0x".to_string() + &"ab".repeat(300))),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((prop::sample::select(FIELD_NAMES), inner), 0..4).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

#[derive(Debug, Clone)]
enum JsonOp {
    Replace(Index, Value),
    Remove(Index),
    Rename(Index, &'static str),
    Duplicate(Index),
}

fn json_op() -> impl Strategy<Value = JsonOp> {
    prop_oneof![
        5 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonOp::Replace(i, v)),
        2 => any::<Index>().prop_map(JsonOp::Remove),
        2 => (any::<Index>(), prop::sample::select(FIELD_NAMES)).prop_map(|(i, k)| JsonOp::Rename(i, k)),
        1 => any::<Index>().prop_map(JsonOp::Duplicate),
    ]
}

/// Paths (as JSON pointers) of every node below the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

fn split_pointer(p: &str) -> (&str, String) {
    let cut = p.rfind('/').unwrap_or(0);
    let last = p[cut + 1..].replace("~1", "/").replace("~0", "~");
    (&p[..cut], last)
}

fn apply_json(root: &mut Value, op: &JsonOp) {
    let mut ps = Vec::new();
    pointers(root, String::new(), &mut ps);
    if ps.is_empty() {
        return;
    }
    let (JsonOp::Replace(i, _) | JsonOp::Remove(i) | JsonOp::Rename(i, _) | JsonOp::Duplicate(i)) =
        op;
    let p = &ps[i.index(ps.len())];
    let (parent, key) = split_pointer(p);
    let Some(parent) = root.pointer_mut(parent) else {
        return;
    };
    match (op, parent) {
        (JsonOp::Replace(_, v), parent) => {
            if let Some(slot) = parent.pointer_mut(&p[p.rfind('/').unwrap_or(0)..]) {
                *slot = v.clone();
            }
        }
        (JsonOp::Remove(_), Value::Object(m)) => {
            m.remove(&key);
        }
        (JsonOp::Remove(_), Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        (JsonOp::Rename(_, new), Value::Object(m)) => {
            if let Some(v) = m.remove(&key) {
                m.insert(new.to_string(), v);
            }
        }
        (JsonOp::Duplicate(_), Value::Array(a)) => {
            if let Some(v) = key.parse::<usize>().ok().and_then(|i| a.get(i).cloned()) {
                a.push(v);
            }
        }
        _ => {}
    }
}

fn check_policy(text: &str, file: &str) {
    match parse_policy(text, file) {
        Err(e) => {
            assert_eq!(e.file, file);
            let shown = e.to_string();
            assert!(shown.starts_with(file), "{shown}");
        }
        Ok(set) => {
            let mut stage = IpsecStage::new(StageConfig::default());
            if let Err(e) = set.apply(&mut stage, T0) {
                assert!(e.to_string().starts_with(file), "{e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6_000, ..ProptestConfig::default() })]

    #[test]
    fn policy_arbitrary_text(text in prop_oneof![
        any::<String>(),
        "[ {}\\[\\]\":,0-9a-z_x./-]{0,200}",
        Just("{\"spd\": {\"outbound\": [".repeat(200)),
        Just("[".repeat(10_000)),
    ]) {
        check_policy(&text, "arbitrary-policy.json");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn policy_mutated_files(which in any::<Index>(), ops in proptest::collection::vec(json_op(), 1..4),
                            cut in prop_oneof![4 => Just(None), 1 => any::<Index>().prop_map(Some)],
                            pretty in any::<bool>()) {
        let files = policy_files();
        let (name, v) = &files[which.index(files.len())];
        let mut v = v.clone();
        for op in &ops {
            apply_json(&mut v, op);
        }
        let mut text = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        };
        if let Some(cut) = cut {
            let chars: Vec<char> = text.chars().collect();
            text = chars[..cut.index(chars.len() + 1)].iter().collect();
        }
        let file = format!("mutated/{}", name.rsplit('/').next().unwrap_or(name));
        check_policy(&text, &file);
    }
}

/// The shipped files themselves parse and apply.
#[test]
fn shipped_policies_parse() {
    for (name, v) in policy_files() {
        let set = parse_policy(&v.to_string(), name).unwrap_or_else(|e| panic!("{e}"));
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, T0).unwrap();
    }
}
