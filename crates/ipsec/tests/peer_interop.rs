//! Interoperability with implementations written elsewhere
//! (../shared/PEERS.md): scapy decrypts what we encrypt and we decrypt what
//! scapy encrypts, for every transform x mode x family x encapsulation;
//! tshark checks our ICVs where it knows the transform. Tampered, replayed
//! and wrong-key packets from scapy are refused with the right counter.
//!
//! Needs the virtualenv and tshark that `scripts/setup-test-deps.sh`
//! installs (`make test` runs it first); without them the test fails and
//! says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId};
use bitsgw_ipsec::{Disposition, DropReason};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const T0: Timestamp = Timestamp::ZERO;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Sends a batch of requests to the scapy/tshark peer.
fn peer(requests: &[Value]) -> Vec<Value> {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the peer's virtualenv is missing: run scripts/setup-test-deps.sh (make test does)"
    );
    let mut child = Command::new(python)
        .arg(repo().join("tests/peer/esp_peer.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start esp_peer.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(requests).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "peer answered no JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(answers.len(), requests.len());
    answers
}

/// The peer's description of A's outbound SA (= B's inbound SA).
fn peer_sa(spec: &PairSpec, enc_key: &str, auth: &str) -> Value {
    let (oa, ob) = spec.outer();
    json!({
        "spi": 0x1001,
        "transform": spec.transform,
        "enc_key": enc_key,
        "auth_key": auth,
        "mode": if spec.tunnel { "tunnel" } else { "transport" },
        "tunnel_src": oa.to_string(),
        "tunnel_dst": ob.to_string(),
        "esn": spec.esn,
        "udp_encap": spec.udp_encap.map(|(a, b)| json!({"sport": a, "dport": b})),
    })
}

fn specs() -> Vec<PairSpec> {
    let mut out = Vec::new();
    for transform in transforms() {
        for (tunnel, inner_v6, outer_v6) in [
            (false, false, false),
            (false, true, true),
            (true, false, false),
            (true, true, true),
            (true, false, true),
            (true, true, false),
        ] {
            for udp_encap in [None, Some((4500, 4500)), Some((4501, 14500))] {
                out.push(PairSpec {
                    transform,
                    tunnel,
                    inner_v6,
                    outer_v6,
                    udp_encap,
                    ..PairSpec::default()
                });
            }
        }
        out.push(PairSpec {
            transform,
            esn: true,
            ..PairSpec::default()
        });
        out.push(PairSpec {
            transform,
            esn: true,
            tunnel: false,
            inner_v6: true,
            udp_encap: Some((4500, 4500)),
            ..PairSpec::default()
        });
    }
    out
}

fn clear_packets(spec: &PairSpec) -> Vec<Vec<u8>> {
    let (ha, hb) = spec.inner();
    [1usize, 100, 1000]
        .iter()
        .map(|len| udp_packet(ha, hb, 40000, 40001, *len))
        .collect()
}

#[test]
fn esp_interoperates_with_scapy_and_tshark() {
    let specs = specs();
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for spec in &specs {
        let (mut a, _) = spec.stages();
        let clear = clear_packets(spec);
        let wires: Vec<Vec<u8>> = clear
            .iter()
            .map(|p| {
                let mut buf = PacketBuf::from_slice(p);
                assert_eq!(a.handle_outbound(&mut buf, T0), Disposition::Forward);
                buf.data().to_vec()
            })
            .collect();
        let enc = &key_for(spec.transform, "enc")[2..];
        let auth = &key_for(spec.transform, "auth")[2..];
        let sa = peer_sa(spec, enc, auth);
        let hexes = |v: &[Vec<u8>]| -> Vec<Value> {
            v.iter()
                .enumerate()
                .map(|(i, p)| json!({"seq": i + 1, "hex": hex::encode(p)}))
                .collect()
        };
        requests.push(json!({"op": "decrypt", "sa": sa, "packets": hexes(&wires)}));
        requests.push(json!({"op": "tshark", "sa": sa, "packets": hexes(&wires)}));
        requests.push(json!({"op": "encrypt", "sa": sa, "packets": hexes(&clear)}));
        // The same packets under a key we do not have.
        let flip = |k: &str| {
            let mut w = k.to_string();
            if !w.is_empty() {
                w.replace_range(0..2, if &k[0..2] == "ff" { "00" } else { "ff" });
            }
            w
        };
        // With a separate integrity key, that is the one the ICV proves.
        let wrong = if !auth.is_empty() {
            peer_sa(spec, enc, &flip(auth))
        } else {
            peer_sa(spec, &flip(enc), auth)
        };
        requests.push(json!({"op": "encrypt", "sa": wrong, "packets": hexes(&clear[..1])}));
        ours.push((clear, wires));
    }
    let answers = peer(&requests);
    let mut tshark_checked = 0;
    let mut unsupported = std::collections::BTreeSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let (clear, _) = &ours[i];
        let [dec, tsh, enc, wrong] = &answers[4 * i..4 * i + 4] else {
            unreachable!()
        };
        // 1. scapy decrypts ours, and our padding is the RFC's default.
        for (j, p) in dec["packets"].as_array().unwrap().iter().enumerate() {
            assert_eq!(p["ok"], true, "{spec:?}: scapy refused our packet: {p}");
            assert_eq!(
                p["hex"].as_str().unwrap(),
                hex::encode(&clear[j]),
                "{spec:?}"
            );
            assert_eq!(p["padding_ok"], true, "{spec:?}");
        }
        // 2. tshark verifies our ICV where it supports the transform.
        if let Some(why) = tsh.get("unsupported") {
            unsupported.insert(format!("{} esn={}: {}", spec.transform, spec.esn, why));
            let id = TransformId::from_name(spec.transform).unwrap();
            assert!(
                spec.esn
                    || matches!(
                        id,
                        TransformId::ChaCha20Poly1305
                            | TransformId::AesGmac128
                            | TransformId::AesGmac256
                    ),
                "tshark should support {spec:?}"
            );
        } else {
            for p in tsh["packets"].as_array().unwrap() {
                assert_eq!(p["icv_good"], true, "{spec:?}: tshark: {p}");
                tshark_checked += 1;
            }
        }
        // 3. We decrypt scapy's packets; then replay and tamper them.
        let (_, mut b) = spec.stages();
        let theirs: Vec<Vec<u8>> = enc["packets"]
            .as_array()
            .unwrap_or_else(|| panic!("{spec:?}: {enc}"))
            .iter()
            .map(|p| hex::decode(p["hex"].as_str().unwrap()).unwrap())
            .collect();
        for (j, w) in theirs.iter().enumerate() {
            let mut buf = PacketBuf::from_slice(w);
            assert_eq!(
                b.handle_inbound(&mut buf, T0),
                Disposition::Deliver,
                "{spec:?}: {:?}",
                b.counters()
            );
            assert_eq!(buf.data(), &clear[j][..], "{spec:?}");
        }
        let mut buf = PacketBuf::from_slice(&theirs[0]);
        assert_eq!(
            b.handle_inbound(&mut buf, T0),
            Disposition::Drop(DropReason::ReplayDuplicate),
            "{spec:?}"
        );
        let mut tampered = theirs[1].clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x80;
        let mut buf = PacketBuf::from_slice(&tampered);
        assert_eq!(
            b.handle_inbound(&mut buf, T0),
            Disposition::Drop(DropReason::IcvFailure),
            "{spec:?}"
        );
        let w = hex::decode(wrong["packets"][0]["hex"].as_str().unwrap()).unwrap();
        let mut fresh = spec.stage(false);
        let mut buf = PacketBuf::from_slice(&w);
        assert_eq!(
            fresh.handle_inbound(&mut buf, T0),
            Disposition::Drop(DropReason::IcvFailure),
            "{spec:?}"
        );
        assert_eq!(b.counters().drops(DropReason::IcvFailure), 1);
        assert_eq!(b.counters().drops(DropReason::ReplayDuplicate), 1);
    }
    assert!(
        tshark_checked >= 5 * 18 * 3,
        "tshark checked only {tshark_checked} packets"
    );
    eprintln!(
        "peer interop: {} combinations; tshark verified {tshark_checked} ICVs; tshark can not check: {unsupported:#?}",
        specs.len()
    );
}

/// ESN with non-zero high bits (RFC 4303 2.2.1): scapy seals at sequence
/// numbers past 2^32 and our transforms open them with the full number,
/// and refuse them with the wrong high half.
#[test]
fn esn_high_bits_agree_with_scapy() {
    let mut requests = Vec::new();
    let seqs: [u64; 3] = [(1 << 32) + 5, (7 << 32) | 0xffff_fff0, u64::MAX];
    for transform in transforms() {
        let spec = PairSpec {
            transform,
            esn: true,
            ..PairSpec::default()
        };
        let clear = &clear_packets(&spec)[1];
        let packets: Vec<Value> = seqs
            .iter()
            .map(|s| json!({"seq": s, "hex": hex::encode(clear)}))
            .collect();
        let sa = peer_sa(
            &spec,
            &key_for(transform, "enc")[2..],
            &key_for(transform, "auth")[2..],
        );
        requests.push(json!({"op": "encrypt", "sa": sa, "packets": packets}));
    }
    let answers = peer(&requests);
    for (transform, ans) in transforms().into_iter().zip(&answers) {
        let id = TransformId::from_name(transform).unwrap();
        let enc = hex::decode(&key_for(transform, "enc")[2..]).unwrap();
        let auth = hex::decode(&key_for(transform, "auth")[2..]).unwrap();
        let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &auth).unwrap();
        for (p, seq) in ans["packets"].as_array().unwrap().iter().zip(seqs) {
            let wire = hex::decode(p["hex"].as_str().unwrap()).unwrap();
            let esp = &wire[20..];
            let mut ok = esp.to_vec();
            t.open(&mut ok, seq, true)
                .unwrap_or_else(|e| panic!("{transform} seq {seq:#x}: {e}"));
            let mut bad = esp.to_vec();
            assert!(
                t.open(&mut bad, seq ^ (1 << 40), true).is_err(),
                "{transform}"
            );
        }
    }
}
