//! Fragmentation, reassembly and ICMP errors on shared fixtures: ESP
//! datagrams over IPv4 and IPv6, whole and in fragments.

use crate::*;
use bitsgw_wire::{checksum, ip, proto, PacketBuf, Timestamp};
use core::time::Duration;

mod fragment;
mod icmp;
mod properties;
mod reassembly;

const SRC4: [u8; 4] = [192, 0, 2, 1];
const DST4: [u8; 4] = [198, 51, 100, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// An ESP-over-IPv4 datagram, 192.0.2.1 -> 198.51.100.2, ident 0xbeef,
/// 24 bytes of data 0..24.
const V4_WHOLE: [u8; 44] = [
    0x45, 0x00, 0x00, 0x2c, 0xbe, 0xef, 0x00, 0x00, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198, 51,
    100, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
/// Its first fragment: MF, data 0..16.
const V4_FRAG1: [u8; 36] = [
    0x45, 0x00, 0x00, 0x24, 0xbe, 0xef, 0x20, 0x00, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198, 51,
    100, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
];
/// Its second fragment: offset 16 (2 units), last, data 16..24.
const V4_FRAG2: [u8; 28] = [
    0x45, 0x00, 0x00, 0x1c, 0xbe, 0xef, 0x00, 0x02, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198, 51,
    100, 2, 16, 17, 18, 19, 20, 21, 22, 23,
];

/// IPv6 ESP datagram with a Destination Options header (PadN) before
/// the ESP data 0..24.
const V6_WHOLE: [u8; 72] = [
    0x60, 0, 0, 0, 0x00, 0x20, 60, 64, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
    50, 0, 1, 4, 0, 0, 0, 0, // Destination Options, next ESP
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
/// First fragment: Destination Options (next Fragment), Fragment header
/// (next ESP, offset 0, M, ident 0x01020304), data 0..16.
const V6_FRAG1: [u8; 72] = [
    0x60, 0, 0, 0, 0x00, 0x20, 60, 64, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
    44, 0, 1, 4, 0, 0, 0, 0, //
    50, 0, 0x00, 0x01, 1, 2, 3, 4, //
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
];
/// Second fragment: offset 16, last, data 16..24.
const V6_FRAG2: [u8; 64] = [
    0x60, 0, 0, 0, 0x00, 0x18, 60, 64, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
    44, 0, 1, 4, 0, 0, 0, 0, //
    50, 0, 0x00, 0x10, 1, 2, 3, 4, //
    16, 17, 18, 19, 20, 21, 22, 23,
];

/// A copy of an IPv4 fixture with its header checksum filled in.
fn v4(fixture: &[u8]) -> Vec<u8> {
    let mut p = fixture.to_vec();
    ip::ipv4_fill_checksum(&mut p);
    p
}

/// An IPv4 fragment of the V4_WHOLE datagram (ident `ident`) at byte
/// offset `off` with `data`.
fn v4_frag(ident: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    ip::emit_ipv4_header(&mut p, SRC4, DST4, proto::ESP, 0, 64, ident, 0, false);
    p.extend_from_slice(data);
    let field = (off / 8) as u16 | if more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&field.to_be_bytes());
    let len = p.len();
    ip::set_total_len(&mut p, len);
    p
}

fn feed(
    r: &mut Reassembler,
    pkt: &[u8],
    now: Timestamp,
    out: &mut PacketBuf,
) -> Result<Reassembly, FragDrop> {
    let meta = ip::parse(pkt).unwrap();
    assert!(meta.frag.is_some());
    r.handle_fragment(pkt, &meta, now, out)
}

fn big_buf() -> PacketBuf {
    PacketBuf::with_capacity(70_000, 64)
}

/// A permutation of `0..n` from `seed` (Fisher-Yates with an LCG).
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

fn reassemble_all(frags: &[Vec<u8>], seed: u64) -> PacketBuf {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = big_buf();
    let order = shuffled(frags.len(), seed);
    for (k, &i) in order.iter().enumerate() {
        let res = feed(&mut r, &frags[i], Timestamp::ZERO, &mut out);
        let want = if k + 1 == order.len() {
            Reassembly::Complete
        } else {
            Reassembly::Held
        };
        assert_eq!(res, Ok(want));
    }
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    out
}

fn v6_packet(ext: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    let mut chain = Vec::new();
    let first = match ext {
        // Hop-by-Hop (PadN), then ESP.
        1 => {
            chain.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]);
            0
        }
        // Hop-by-Hop, Destination Options, Routing (type 4, 0 left,
        // one address), Destination Options, then ESP.
        2 => {
            chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
            chain.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]);
            chain.extend_from_slice(&[60, 2, 4, 0, 1, 0, 0, 0]);
            chain.extend_from_slice(&[0xaa; 16]);
            chain.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]);
            0
        }
        _ => 50,
    };
    let plen = (chain.len() + payload.len()) as u16;
    ip::emit_ipv6_header(&mut p, SRC6, DST6, first, plen, 64, 0);
    p.extend_from_slice(&chain);
    p.extend_from_slice(payload);
    p
}
