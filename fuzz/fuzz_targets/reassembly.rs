#![no_main]
//! A sequence of fragments split from the input, fed to a Reassembler
//! (and the same ones to a stage). Each record is: a control byte (bit 0
//! IPv6, bit 1 MF, bits 2-3 identification, bit 4 advance the clock), two
//! bytes of offset in 8-byte units, a length byte, then that much data.

use bitsgw_frag::{Reassembler, ReassemblyLimits};
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_wire::{ip, PacketBuf, Timestamp};
use core::time::Duration;
use libfuzzer_sys::fuzz_target;

fn fragment(ctl: u8, off: u16, data: &[u8]) -> Vec<u8> {
    let more = ctl & 2 != 0;
    let ident = (ctl >> 2) & 3;
    let mut p = Vec::new();
    if ctl & 1 != 0 {
        let mut h = [0u8; 40];
        let plen = (8 + data.len()) as u16;
        ip::emit_ipv6_header(
            &mut h,
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            44,
            plen,
            64,
            0,
        );
        p.extend_from_slice(&h);
        let of = (off << 3) | u16::from(more);
        p.extend_from_slice(&[50, 0]);
        p.extend_from_slice(&of.to_be_bytes());
        p.extend_from_slice(&u32::from(ident).to_be_bytes());
    } else {
        let mut h = [0u8; 20];
        ip::emit_ipv4_header(
            &mut h,
            [203, 0, 113, 1],
            [203, 0, 113, 2],
            50,
            (20 + data.len()) as u16,
            64,
            u16::from(ident),
            0,
            false,
        );
        let ff = (off & 0x1fff) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&ff.to_be_bytes());
        ip::ipv4_fill_checksum(&mut h);
        p.extend_from_slice(&h);
    }
    p.extend_from_slice(data);
    p
}

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_bytes: 4096,
        max_datagrams: 4,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let mut stage = IpsecStage::new(StageConfig {
        reassembly: limits,
        ..StageConfig::default()
    });
    let mut out = PacketBuf::new();
    let mut now = Timestamp::ZERO;
    let mut rest = data;
    while let [ctl, o1, o2, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        if ctl & 0x10 != 0 {
            now = now.saturating_add(Duration::from_secs(u64::from(*o1)));
            stage.handle_timeout(now);
            r.handle_timeout(now);
        }
        let pkt = fragment(*ctl, u16::from_be_bytes([*o1, *o2]), body);
        if let Ok(meta) = ip::parse(&pkt) {
            if meta.frag.is_some() {
                if let Ok(bitsgw_frag::Reassembly::Complete) =
                    r.handle_fragment(&pkt, &meta, now, &mut out)
                {
                    let m = ip::parse(out.data()).expect("reassembled datagrams parse");
                    assert_eq!(m.total_len, out.len());
                    assert!(m.frag.is_none());
                }
            }
        }
        assert!(r.bytes_held() <= limits.max_bytes);
        assert!(r.in_progress() <= limits.max_datagrams);
        let mut buf = PacketBuf::from_slice(&pkt);
        let _ = stage.handle_inbound(&mut buf, now);
    }
});
