#![no_main]
//! Byte 0 picks the configuration; the rest is a packet from the protected
//! side. What A protects, B must take back unchanged.

mod common;

use bitsgw_ipsec::Disposition;
use bitsgw_wire::{ip, PacketBuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, rest @ ..] = data else { return };
    let (_shape, mut a, mut b) = common::pair(*pick);
    let before = a.counters().clone();
    let mut buf = PacketBuf::from_slice(rest);
    let d = a.handle_outbound(&mut buf, common::T0);
    common::check_drop(&before, a.counters(), d);
    match d {
        Disposition::Forward => {
            let m = ip::parse(buf.data()).expect("forwarded packets parse");
            assert_eq!(m.total_len, buf.len());
            let before = b.counters().clone();
            let r = b.handle_inbound(&mut buf, common::T0);
            common::check_drop(&before, b.counters(), r);
        }
        Disposition::Fragmented(n) => {
            let mut out = PacketBuf::new();
            for _ in 0..n {
                assert!(a.poll_transmit(&mut out));
                let before = b.counters().clone();
                let r = b.handle_inbound(&mut out, common::T0);
                common::check_drop(&before, b.counters(), r);
            }
            assert!(!a.poll_transmit(&mut out));
        }
        Disposition::Drop(_) | Disposition::IcmpError => {}
        other => panic!("outbound returned {other:?}"),
    }
});
