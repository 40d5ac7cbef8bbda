//! Arbitrary frames into the VLAN tag walk: no input may panic, and what
//! it reports always lies inside the frame and matches the bytes there.

use bitsgw_wire::ether::{
    Layer2, SavedHeader, ETHERTYPE_IPV4, HEADER_LEN, MAX_HEADER_LEN, TPID_CTAG, TPID_STAG,
};
use proptest::prelude::*;

/// Frames whose first two EtherType slots are tags or IP often.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let ethertype = prop_oneof![
        Just(TPID_CTAG),
        Just(TPID_STAG),
        Just(0x9100u16),
        Just(ETHERTYPE_IPV4),
        any::<u16>(),
    ];
    (
        ethertype.clone(),
        ethertype.clone(),
        ethertype,
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(a, b, c, mut v)| {
            for (at, t) in [(12, a), (16, b), (20, c)] {
                if let Some(slot) = v.get_mut(at..at + 2) {
                    slot.copy_from_slice(&t.to_be_bytes());
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30_000))]

    #[test]
    fn the_tag_walk_never_panics_and_stays_inside(frame in frame_like()) {
        if let Some(l2) = Layer2::parse(&frame) {
            prop_assert!(matches!(l2.header_len, 14 | 18 | 22));
            prop_assert!(l2.header_len <= frame.len());
            let at = l2.header_len - 2;
            prop_assert_eq!(u16::from_be_bytes([frame[at], frame[at + 1]]), l2.ethertype);
            let saved = SavedHeader::copy_from(&frame, &l2);
            prop_assert!(saved.is_some());
            let saved = saved.unwrap_or_default();
            prop_assert_eq!(saved.as_bytes(), &frame[..l2.header_len]);
            let mut out = [0u8; MAX_HEADER_LEN];
            saved.emit(&mut out[..saved.len()], l2.ethertype);
            prop_assert_eq!(&out[..saved.len()], &frame[..l2.header_len]);
        } else {
            // Only a frame cut inside its header or tags is refused.
            prop_assert!(frame.len() < MAX_HEADER_LEN);
            let outer = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
            prop_assert!(
                frame.len() < HEADER_LEN || outer == Some(TPID_CTAG) || outer == Some(TPID_STAG)
            );
        }
    }
}
