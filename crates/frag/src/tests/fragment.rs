use super::*;

#[test]
fn fragment_ipv4_refuses_df_and_tiny_mtu() {
    let mut whole = V4_WHOLE;
    whole[6] = 0x40;
    let mut scratch = PacketBuf::new();
    let mut n = 0;
    let e = fragment_ipv4(&v4(&whole), 40, &mut scratch, &mut |_| n += 1);
    assert_eq!(e, Err(FragDrop::DontFragment));
    let e = fragment_ipv4(&v4(&V4_WHOLE), 27, &mut scratch, &mut |_| n += 1);
    assert_eq!(e, Err(FragDrop::MtuTooSmall));
    assert_eq!(n, 0);
    // DF does not matter when the packet fits.
    let ok = fragment_ipv4(&v4(&whole), 44, &mut scratch, &mut |p| {
        assert_eq!(p, &v4(&whole)[..]);
        n += 1;
    });
    assert_eq!((ok, n), (Ok(1), 1));
}

#[test]
fn fragment_ipv4_fixture() {
    let mut frags = Vec::new();
    let mut scratch = PacketBuf::new();
    let n = fragment_ipv4(&v4(&V4_WHOLE), 36, &mut scratch, &mut |p| {
        frags.push(p.to_vec())
    });
    assert_eq!(n, Ok(2));
    assert_eq!(frags, [v4(&V4_FRAG1), v4(&V4_FRAG2)]);
}

#[test]
fn fragment_ipv4_copies_only_copied_options_and_refragments() {
    // Stream ID (copied), NOP, Record Route (not copied).
    let opts = [0x88, 4, 0x12, 0x34, 1, 7, 7, 4, 0, 0, 0, 0];
    let mut p = vec![0u8; 20];
    ip::emit_ipv4_header(&mut p, SRC4, DST4, proto::ESP, 0, 64, 9, 0, false);
    p.extend_from_slice(&opts);
    p[0] = 0x48;
    p.extend((0..100).map(|i| i as u8));
    // Already a fragment at offset 64 with MF.
    p[6..8].copy_from_slice(&(0x2000u16 | 8).to_be_bytes());
    let len = p.len();
    ip::set_total_len(&mut p, len);
    let mut frags = Vec::new();
    let mut scratch = PacketBuf::new();
    fragment_ipv4(&p, 72, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
    let mut at = 64;
    for (i, f) in frags.iter().enumerate() {
        assert!(f.len() <= 72);
        let m = ip::parse(f).unwrap();
        assert_eq!(checksum::checksum(&f[..m.header_len]), 0);
        let fi = m.frag.unwrap();
        assert_eq!(fi.offset, at);
        assert!(fi.more, "the original had MF set");
        if i == 0 {
            assert_eq!(
                &f[..32],
                &{
                    let mut h = p[..32].to_vec();
                    h[2..4].copy_from_slice(&(f.len() as u16).to_be_bytes());
                    ip::ipv4_fill_checksum(&mut h);
                    h
                }[..]
            );
        } else {
            assert_eq!(m.header_len, 24);
            assert_eq!(&f[20..24], &[0x88, 4, 0x12, 0x34]);
        }
        at += (f.len() - m.header_len) as u32;
    }
    assert_eq!(at, 64 + 100);
}

#[test]
fn fragment_ipv6_keeps_the_routing_header_unfragmentable() {
    let p = v6_packet(2, &[7; 300]);
    let mut frags = Vec::new();
    let mut scratch = PacketBuf::new();
    let n = fragment_ipv6(&p, 200, 0x55, &mut scratch, &mut |f| frags.push(f.to_vec()));
    assert_eq!(n, Ok(frags.len()));
    for f in &frags {
        assert!(f.len() <= 200);
        let m = ip::parse(f).unwrap();
        // Hop-by-Hop (8) + Destination Options (8) + Routing (24).
        assert_eq!(m.frag.unwrap().header_at, 80);
        // The Routing header's Next Header names the Fragment header.
        assert_eq!(f[56], 44);
        assert_eq!(
            &f[..80],
            &{
                let mut h = p[..80].to_vec();
                h[4..6].copy_from_slice(&((f.len() - 40) as u16).to_be_bytes());
                h[56] = 44;
                h
            }[..]
        );
    }
    assert_eq!(reassemble_all(&frags, 1).data(), &p[..]);
    // Room for 8 bytes only: the trailing Destination Options header
    // and the ESP header would be split.
    let e = fragment_ipv6(&p, 96, 0x55, &mut scratch, &mut |_| {});
    assert_eq!(e, Err(FragDrop::MtuTooSmall));
}
