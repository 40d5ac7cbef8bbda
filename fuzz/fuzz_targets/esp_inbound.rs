#![no_main]
//! Byte 0 picks the transform, mode, family and encapsulation; byte 1
//! says whether the rest is a whole packet from the network, or the
//! plaintext body (payload, padding, pad length, next header) of an
//! authentic ESP packet sealed for B, so the checks after the ICV see
//! hostile input too.

mod common;

use bitsgw_ipsec::Disposition;
use bitsgw_wire::{ip, PacketBuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, how, rest @ ..] = data else { return };
    let (shape, mut b) = common::stage(*pick, false);
    let pkt = if how & 1 == 0 {
        rest.to_vec()
    } else {
        let seq = u32::from(how >> 1);
        shape.sealed(seq, rest)
    };
    let before = b.counters().clone();
    let mut buf = PacketBuf::from_slice(&pkt);
    let d = b.handle_inbound(&mut buf, common::T0);
    common::check_drop(&before, b.counters(), d);
    match d {
        Disposition::Deliver => {
            let m = ip::parse(buf.data()).expect("delivered packets parse");
            assert_eq!(m.total_len, buf.len());
        }
        Disposition::Drop(_) | Disposition::Held | Disposition::ToIke => {}
        other => panic!("inbound returned {other:?}"),
    }
});
