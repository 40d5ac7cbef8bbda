#![no_main]
//! The Mobility Header (RFC 6275 6.1, 6.2; RFC 5555 3): any bytes through
//! the view, the parser and the option iterator; what parses is emitted
//! again (for the message types we emit) and must parse to the same
//! message and options. Also the Home Address option, the type 2 routing
//! header and the decapsulation on arbitrary packets.

use bitsgw_wire::mh::{emit_mh, mh_buffer_len, Message, MhOption, MhPacket, MhRepr};
use bitsgw_wire::{encap, mip6, PacketBuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = MhPacket::new_checked(data) {
        let _ = p.verify_checksum(&[1; 16], &[2; 16]);
        if let Ok(repr) = MhRepr::parse(&p) {
            let opts: Vec<MhOption<'_>> = repr
                .options()
                .filter(|o| !matches!(o, MhOption::Pad1 | MhOption::PadN(_)))
                .collect();
            if !matches!(repr.message, Message::Unknown { .. }) {
                let mut out = vec![0u8; mh_buffer_len(&repr.message, &opts)];
                if let Ok(n) = emit_mh(&mut out, &repr.message, &opts) {
                    let again = MhPacket::new_checked(&out[..n]).expect("our own MH is valid");
                    let r2 = MhRepr::parse(&again).expect("our own MH parses");
                    assert_eq!(r2.message, repr.message);
                    let o2: Vec<MhOption<'_>> = r2
                        .options()
                        .filter(|o| !matches!(o, MhOption::Pad1 | MhOption::PadN(_)))
                        .collect();
                    assert_eq!(o2, opts);
                }
            }
        }
    }
    let mut pkt = data.to_vec();
    let _ = mip6::find_home_address_option(&pkt);
    let _ = mip6::swap_home_address(&mut pkt);
    let _ = mip6::find_type2_routing_header(&pkt);
    let _ = mip6::process_type2_routing_header(&mut pkt);
    let mut buf = PacketBuf::from_slice(data);
    let _ = mip6::remove_home_address_option(&mut buf);
    let mut buf = PacketBuf::from_slice(data);
    let _ = mip6::remove_type2_routing_header(&mut buf);
    let mut buf = PacketBuf::from_slice(data);
    let _ = encap::decapsulate(&mut buf, encap::DSMIP_UDP_PORT);
});
