use super::*;

#[test]
fn names_are_distinct_and_indexed() {
    for (i, r) in FragDrop::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    }
    let mut names: Vec<_> = FragDrop::ALL.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FragDrop::ALL.len());
}

#[test]
fn v4_in_order() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out),
        Ok(Reassembly::Held)
    );
    assert_eq!((r.in_progress(), r.bytes_held()), (1, 36));
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
        Ok(Reassembly::Complete)
    );
    assert_eq!(out.data(), &v4(&V4_WHOLE)[..]);
    assert_eq!(checksum::checksum(&out.data()[..20]), 0);
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn v4_out_of_order_keeps_first_header_and_df() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    let mut f1 = V4_FRAG1;
    f1[6] |= 0x40; // DF on the first fragment only
    f1[8] = 7; // its TTL
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
        Ok(Reassembly::Held)
    );
    assert_eq!(
        feed(&mut r, &v4(&f1), t, &mut out),
        Ok(Reassembly::Complete)
    );
    let mut want = V4_WHOLE;
    want[6] = 0x40;
    want[8] = 7;
    assert_eq!(out.data(), &v4(&want)[..]);
}

#[test]
fn v4_duplicate_drops_the_datagram() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out),
        Err(FragDrop::Overlap)
    );
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    assert_eq!(r.dropped(FragDrop::Overlap), 2);
    // The rest of it can not complete anything now.
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
        Ok(Reassembly::Held)
    );
}

#[test]
fn v4_partial_overlap_and_second_last_fragment() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &v4_frag(1, 16, true, &[0; 16]), t, &mut out).unwrap();
    // 8..24 overlaps 16..32 from the front.
    let e = feed(&mut r, &v4_frag(1, 8, true, &[0; 16]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Overlap));
    feed(&mut r, &v4_frag(2, 16, true, &[0; 16]), t, &mut out).unwrap();
    // 24..32 inside 16..32.
    let e = feed(&mut r, &v4_frag(2, 24, false, &[0; 8]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Overlap));
    feed(&mut r, &v4_frag(3, 32, false, &[0; 8]), t, &mut out).unwrap();
    // A second, different end.
    let e = feed(&mut r, &v4_frag(3, 48, false, &[0; 8]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Malformed));
    feed(&mut r, &v4_frag(4, 32, false, &[0; 8]), t, &mut out).unwrap();
    // Data past the end.
    let e = feed(&mut r, &v4_frag(4, 40, true, &[0; 8]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Malformed));
    feed(&mut r, &v4_frag(5, 32, true, &[0; 8]), t, &mut out).unwrap();
    // A last fragment ending before held data.
    let e = feed(&mut r, &v4_frag(5, 8, false, &[0; 8]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Malformed));
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
}

#[test]
fn v4_malformed_and_too_large_fragments_alone_are_dropped() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
    let e = feed(&mut r, &v4_frag(0xbeef, 16, true, &[0; 7]), t, &mut out);
    assert_eq!(e, Err(FragDrop::Malformed));
    let e = feed(
        &mut r,
        &v4_frag(0xbeef, 65_528, false, &[0; 8]),
        t,
        &mut out,
    );
    assert_eq!(e, Err(FragDrop::TooLarge));
    // Neither touched the datagram in progress.
    assert_eq!(r.in_progress(), 1);
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
        Ok(Reassembly::Complete)
    );
    assert_eq!(r.dropped(FragDrop::Malformed), 1);
    assert_eq!(r.dropped(FragDrop::TooLarge), 1);
    // A packet that is not a fragment.
    let meta = ip::parse(&V4_WHOLE).unwrap();
    let e = r.handle_fragment(&V4_WHOLE, &meta, t, &mut out);
    assert_eq!(e, Err(FragDrop::Malformed));
}

#[test]
fn missing_piece_times_out() {
    let limits = ReassemblyLimits::default();
    let mut r = Reassembler::new(limits);
    let mut out = PacketBuf::new();
    let t0 = Timestamp::from_secs(100);
    feed(&mut r, &v4_frag(1, 0, true, &[0; 8]), t0, &mut out).unwrap();
    feed(&mut r, &v4_frag(1, 16, false, &[0; 8]), t0, &mut out).unwrap();
    let t1 = Timestamp::from_secs(110);
    feed(&mut r, &v4_frag(2, 0, true, &[0; 8]), t1, &mut out).unwrap();
    assert_eq!(r.poll_timeout(), Some(t0.saturating_add(limits.timeout)));
    assert_eq!(r.handle_timeout(Timestamp::from_secs(159)), 0);
    assert_eq!(r.handle_timeout(Timestamp::from_secs(160)), 2);
    assert_eq!((r.in_progress(), r.bytes_held()), (1, 28));
    assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(170)));
    assert_eq!(r.handle_timeout(Timestamp::from_secs(1000)), 1);
    assert_eq!(r.dropped(FragDrop::TimedOut), 3);
    assert_eq!(
        (r.in_progress(), r.bytes_held(), r.poll_timeout()),
        (0, 0, None)
    );
}

#[test]
fn fragment_for_an_expired_datagram_starts_a_new_one() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    feed(&mut r, &v4(&V4_FRAG1), Timestamp::ZERO, &mut out).unwrap();
    let late = Timestamp::from_secs(61);
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG1), late, &mut out),
        Ok(Reassembly::Held)
    );
    assert_eq!(r.dropped(FragDrop::TimedOut), 1);
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), late, &mut out),
        Ok(Reassembly::Complete)
    );
}

#[test]
fn memory_limit() {
    let limits = ReassemblyLimits {
        max_bytes: 60,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
    // A new datagram that does not fit is refused alone.
    let e = feed(&mut r, &v4_frag(7, 0, true, &[0; 32]), t, &mut out);
    assert_eq!(e, Err(FragDrop::MemoryLimit));
    assert_eq!((r.in_progress(), r.bytes_held()), (1, 36));
    // The rest of a datagram that does not fit discards it.
    let e = feed(&mut r, &v4_frag(0xbeef, 16, true, &[0; 16]), t, &mut out);
    assert_eq!(e, Err(FragDrop::MemoryLimit));
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    assert_eq!(r.dropped(FragDrop::MemoryLimit), 3);
}

#[test]
fn too_many_datagrams() {
    let limits = ReassemblyLimits {
        max_datagrams: 2,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &v4_frag(1, 0, true, &[0; 8]), t, &mut out).unwrap();
    feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
    let e = feed(&mut r, &v4_frag(3, 0, true, &[0; 8]), t, &mut out);
    assert_eq!(e, Err(FragDrop::TooManyDatagrams));
    // Fragments of datagrams in progress are still taken.
    assert_eq!(
        feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
        Ok(Reassembly::Complete)
    );
    assert_eq!(
        feed(&mut r, &v4_frag(3, 0, true, &[0; 8]), t, &mut out),
        Ok(Reassembly::Held)
    );
}

#[test]
fn output_buffer_too_small_discards_the_datagram() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::with_capacity(40, 0);
    let t = Timestamp::ZERO;
    feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
    let e = feed(&mut r, &v4(&V4_FRAG2), t, &mut out);
    assert_eq!(e, Err(FragDrop::BufferTooSmall));
    assert_eq!(r.dropped(FragDrop::BufferTooSmall), 2);
    assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
}

#[test]
fn v6_fragment_after_destination_options() {
    for order in [[0, 1], [1, 0]] {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let frags: [&[u8]; 2] = [&V6_FRAG1, &V6_FRAG2];
        let t = Timestamp::ZERO;
        assert_eq!(
            feed(&mut r, frags[order[0]], t, &mut out),
            Ok(Reassembly::Held)
        );
        assert_eq!(
            feed(&mut r, frags[order[1]], t, &mut out),
            Ok(Reassembly::Complete)
        );
        assert_eq!(out.data(), &V6_WHOLE[..]);
        let m = ip::parse(out.data()).unwrap();
        assert_eq!((m.proto, m.header_len, m.frag), (50, 48, None));
    }
}

#[test]
fn v6_overlap_and_keys() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = PacketBuf::new();
    let t = Timestamp::ZERO;
    feed(&mut r, &V6_FRAG1, t, &mut out).unwrap();
    // Same ident, other source: another datagram.
    let mut other = V6_FRAG2;
    other[23] = 9;
    assert_eq!(feed(&mut r, &other, t, &mut out), Ok(Reassembly::Held));
    assert_eq!(r.in_progress(), 2);
    // Offset 8, 8 bytes: inside the first fragment's data.
    let mut inside = V6_FRAG2;
    inside[51] = 0x09; // offset 8, M
    assert_eq!(feed(&mut r, &inside, t, &mut out), Err(FragDrop::Overlap));
    assert_eq!(r.in_progress(), 1);
}
