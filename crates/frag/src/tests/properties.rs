use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fragment_ipv4_round_trip(
        len in 0usize..4000,
        mtu in 68usize..1600,
        ident in any::<u16>(),
        with_options in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut p = vec![0u8; 20];
        ip::emit_ipv4_header(&mut p, SRC4, DST4, proto::ESP, 0, 64, ident, 0x28, false);
        if with_options {
            p.extend_from_slice(&[0x88, 4, 0x12, 0x34, 1, 7, 7, 4, 0, 0, 0, 0]);
            p[0] = 0x48;
        }
        p.extend((0..len).map(|i| (i * 7 + usize::from(ident)) as u8));
        let total = p.len();
        ip::set_total_len(&mut p, total);
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::new();
        let n = fragment_ipv4(&p, mtu, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
        prop_assert_eq!(n, frags.len());
        if n == 1 {
            prop_assert_eq!(&frags[0], &p);
            return Ok(());
        }
        for f in &frags {
            prop_assert!(f.len() <= mtu);
            let m = ip::parse(f).unwrap();
            prop_assert_eq!(checksum::checksum(&f[..m.header_len]), 0);
            prop_assert_eq!(m.frag.unwrap().offset % 8, 0);
        }
        let whole = reassemble_all(&frags, seed);
        prop_assert_eq!(whole.data(), &p[..]);
    }

    #[test]
    fn fragment_ipv6_round_trip(
        len in 0usize..4000,
        mtu in 120usize..1600,
        ident in any::<u32>(),
        ext in 0u8..3,
        seed in any::<u64>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        let p = v6_packet(ext, &payload);
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::new();
        let n = fragment_ipv6(&p, mtu, ident, &mut scratch, &mut |f| frags.push(f.to_vec()))
            .unwrap();
        prop_assert_eq!(n, frags.len());
        if n == 1 {
            prop_assert_eq!(&frags[0], &p);
            return Ok(());
        }
        for f in &frags {
            prop_assert!(f.len() <= mtu);
            let fi = ip::parse(f).unwrap().frag.unwrap();
            prop_assert_eq!(fi.ident, ident);
        }
        let whole = reassemble_all(&frags, seed);
        prop_assert_eq!(whole.data(), &p[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        pkts in proptest::collection::vec(
            (0u8..2, proptest::collection::vec(any::<u8>(), 0..160)),
            1..24,
        ),
        step in 0u64..40,
    ) {
        let limits = ReassemblyLimits {
            max_bytes: 600,
            max_datagrams: 3,
            timeout: Duration::from_secs(30),
            max_datagram_len: 65_535,
        };
        let mut r = Reassembler::new(limits);
        let mut out = PacketBuf::with_capacity(400, 16);
        let mut scratch = PacketBuf::new();
        for (k, (kind, mut bytes)) in pkts.into_iter().enumerate() {
            // Steer most inputs towards fragments: a version nibble and,
            // for IPv4, a plausible length and the MF/offset bits.
            if let Some(b) = bytes.first_mut() {
                *b = if kind == 0 { 0x45 | (*b & 0x0f) } else { 0x60 | (*b & 0x0f) };
            }
            if kind == 0 && bytes.len() >= 20 {
                let l = bytes.len() as u16;
                bytes[2..4].copy_from_slice(&l.to_be_bytes());
                bytes[6] |= 0x20;
            } else if kind == 1 && bytes.len() >= 48 {
                let l = (bytes.len() - 40) as u16;
                bytes[4..6].copy_from_slice(&l.to_be_bytes());
                bytes[6] = 44;
            }
            let now = Timestamp::from_secs(step * k as u64);
            if let Ok(meta) = ip::parse(&bytes) {
                if meta.frag.is_some() {
                    if let Ok(Reassembly::Complete) = r.handle_fragment(&bytes, &meta, now, &mut out) {
                        prop_assert!(ip::parse(out.data()).is_ok());
                    }
                }
            }
            prop_assert!(r.bytes_held() <= limits.max_bytes);
            prop_assert!(r.in_progress() <= limits.max_datagrams);
            r.handle_timeout(now);
            let _ = fragment_ipv4(&bytes, 68, &mut scratch, &mut |_| {});
            let _ = fragment_ipv6(&bytes, 100, 1, &mut scratch, &mut |_| {});
            let _ = icmpv4_frag_needed(&bytes, 1000, [10, 0, 0, 1], &mut scratch);
            let _ = icmpv6_packet_too_big(&bytes, 1280, [0x20; 16], &mut scratch);
        }
        if r.in_progress() == 0 {
            prop_assert_eq!(r.bytes_held(), 0);
        }
    }

    #[test]
    fn random_fragment_streams_keep_the_books(
        frags in proptest::collection::vec(
            (0u16..2, 0usize..5, 0usize..4, proptest::bool::weighted(0.7)),
            1..40,
        ),
    ) {
        let limits = ReassemblyLimits {
            max_bytes: 400,
            max_datagrams: 2,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = big_buf();
        let mut accepted = 0u64;
        let mut refused = 0u64;
        for (ident, off, len, more) in frags {
            let data: Vec<u8> = (0..len * 8).map(|i| i as u8).collect();
            let pkt = v4_frag(ident, off * 8, more, &data);
            let Ok(meta) = ip::parse(&pkt) else { continue };
            if meta.frag.is_none() {
                continue;
            }
            match r.handle_fragment(&pkt, &meta, Timestamp::ZERO, &mut out) {
                Ok(Reassembly::Complete) => {
                    accepted += 1;
                    let m = ip::parse(out.data()).unwrap();
                    prop_assert_eq!(m.frag, None);
                    prop_assert_eq!(checksum::checksum(&out.data()[..20]), 0);
                }
                Ok(Reassembly::Held) => accepted += 1,
                Err(_) => refused += 1,
            }
            prop_assert!(r.bytes_held() <= limits.max_bytes);
            prop_assert!(r.in_progress() <= limits.max_datagrams);
        }
        let dropped: u64 = FragDrop::ALL.iter().map(|&d| r.dropped(d)).sum();
        prop_assert!(dropped >= refused);
        prop_assert!(dropped <= refused + accepted);
    }
}
