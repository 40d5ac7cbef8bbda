#![no_main]
//! IKEv2 messages (RFC 7296 3): any bytes through the header view, the
//! payload chain and every payload parser; what parses is emitted again
//! and must parse to the same message. An SK payload is also opened with
//! fixed AES-GCM and AES-CBC keys, which must fail cleanly on anything
//! but a genuine message.

use bitsgw_ike::crypto::{Secret, SkKeys};
use bitsgw_ike::suite::{DhGroup, Encryption, IkeSuite, Integrity, Prf};
use bitsgw_ike::wire::{parse_chain, Message, Payload, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn keys(encryption: Encryption) -> SkKeys {
    let suite = IkeSuite {
        encryption,
        integrity: (!encryption.is_aead()).then_some(Integrity::HmacSha256_128),
        prf: Prf::HmacSha256,
        group: DhGroup::Curve25519,
    };
    let e = Secret::new(vec![7; encryption.key_len() + encryption.salt_len()]);
    let a = Secret::new(vec![9; 32]);
    SkKeys::new(&suite, &e, &a)
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(msg.header.length as usize >= HEADER_LEN);
    let out = msg.to_vec().expect("a parsed message emits");
    assert_eq!(out.len(), msg.header.length as usize);
    let again = Message::parse(&out).expect("our own message parses");
    assert_eq!(again, msg);
    if let Some(Payload::Sk(sk)) = msg.payloads.last() {
        let bytes = &data[..msg.header.length as usize];
        let body_at = bytes.len() - sk.body.len();
        for enc in [Encryption::AES128_GCM16, Encryption::AES256_CBC] {
            if let Ok(inner) = keys(enc).open(bytes, body_at) {
                let _ = parse_chain(sk.first_inner, &inner);
            }
        }
    }
});
