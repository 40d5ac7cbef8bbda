use super::*;

#[test]
fn icmpv4_frag_needed_checksums_and_quote() {
    let mut orig = vec![0u8; 1500];
    ip::emit_ipv4_header(&mut orig, DST4, SRC4, proto::UDP, 1500, 63, 77, 0, true);
    for (i, b) in orig[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let me = [203, 0, 113, 1];
    let mut out = PacketBuf::new();
    icmpv4_frag_needed(&orig, 1400, me, &mut out).unwrap();
    let o = out.data();
    assert_eq!(o.len(), 576);
    let m = ip::parse(o).unwrap();
    assert_eq!((m.proto, m.frag, m.total_len), (1, None, 576));
    assert_eq!(checksum::checksum(&o[..20]), 0);
    assert_eq!(checksum::checksum(&o[20..]), 0);
    assert_eq!(&o[12..16], &me);
    assert_eq!(&o[16..20], &DST4);
    assert_eq!(&o[20..22], &[3, 4]);
    assert_eq!(&o[24..28], &[0, 0, 0x05, 0x78]);
    assert_eq!(&o[28..], &orig[..548]);
    // A short original is quoted whole.
    icmpv4_frag_needed(&v4(&V4_WHOLE), 576, me, &mut out).unwrap();
    assert_eq!(&out.data()[28..], &v4(&V4_WHOLE)[..]);
    assert_eq!(checksum::checksum(&out.data()[20..]), 0);
}

#[test]
fn icmpv4_not_about_errors_later_fragments_or_multicast() {
    let mut out = PacketBuf::new();
    let me = [203, 0, 113, 1];
    let mut err = vec![0u8; 28];
    ip::emit_ipv4_header(&mut err, SRC4, DST4, proto::ICMP, 28, 64, 1, 0, false);
    err[20] = 3;
    assert_eq!(
        icmpv4_frag_needed(&err, 1400, me, &mut out),
        Err(FragDrop::IcmpNotAllowed)
    );
    err[20] = 8; // echo request: fine
    assert!(icmpv4_frag_needed(&err, 1400, me, &mut out).is_ok());
    assert_eq!(
        icmpv4_frag_needed(&v4(&V4_FRAG2), 1400, me, &mut out),
        Err(FragDrop::IcmpNotAllowed)
    );
    let mut mc = V4_WHOLE;
    mc[16] = 239;
    assert_eq!(
        icmpv4_frag_needed(&v4(&mc), 1400, me, &mut out),
        Err(FragDrop::IcmpNotAllowed)
    );
}

#[test]
fn icmpv6_packet_too_big_checksums_and_quote() {
    let payload: Vec<u8> = (0..1460).map(|i| i as u8).collect();
    let orig = v6_packet(0, &payload);
    let me = [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
    ];
    let mut out = PacketBuf::new();
    icmpv6_packet_too_big(&orig, 1400, me, &mut out).unwrap();
    let o = out.data();
    assert_eq!(o.len(), 1280);
    let m = ip::parse(o).unwrap();
    assert_eq!((m.proto, m.header_len, m.total_len), (58, 40, 1280));
    assert_eq!(&o[8..24], &me);
    assert_eq!(&o[24..40], &SRC6);
    assert_eq!(&o[40..48], &[2, 0, o[42], o[43], 0, 0, 0x05, 0x78]);
    let acc = checksum::pseudo_header(&me, &SRC6, proto::ICMPV6, 1240);
    assert_eq!(checksum::finish(checksum::sum(acc, &o[40..])), 0);
    assert_eq!(&o[48..], &orig[..1232]);
    // ICMPv6 errors are not answered; informational messages are.
    let mut err = v6_packet(0, &[1, 0, 0, 0, 0, 0, 0, 0]);
    err[6] = 58;
    assert_eq!(
        icmpv6_packet_too_big(&err, 1280, me, &mut out),
        Err(FragDrop::IcmpNotAllowed)
    );
    err[40] = 128;
    icmpv6_packet_too_big(&err, 1280, me, &mut out).unwrap();
    assert_eq!(&out.data()[48..], &err[..]);
    let mut mc = orig.clone();
    mc[8] = 0xff;
    assert_eq!(
        icmpv6_packet_too_big(&mc, 1280, me, &mut out),
        Err(FragDrop::IcmpNotAllowed)
    );
}
