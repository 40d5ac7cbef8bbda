//! Interoperability of the Mobility Header, Home Address option and type 2
//! routing header with scapy (../shared/PEERS.md), through
//! tests/peer/mh_peer.py: scapy builds messages that we parse and whose
//! checksums we verify, and scapy dissects what we emit and recomputes its
//! checksum. All cases go to one python process.
//!
//! Needs the virtualenv of `scripts/setup-test-deps.sh` at `.venv` in the
//! repository. Without it the test is skipped with a message, unless the
//! environment variable CI is set, when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitsgw_wire::ip;
use bitsgw_wire::mh::{
    emit_mh, mh_buffer_len, BindingAck, BindingUpdate, Message, MhOption, MhPacket, MhRepr,
};
use bitsgw_wire::mip6;
use bitsgw_wire::PacketBuf;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Sends all requests to the scapy peer; `None` if the virtualenv is
/// missing outside CI.
fn peer(requests: &[Value]) -> Option<Vec<Value>> {
    let python = repo().join(".venv/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the peer's virtualenv is missing: run scripts/setup-test-deps.sh (make test does)"
        );
        eprintln!("SKIPPED: no .venv (run scripts/setup-test-deps.sh)");
        return None;
    }
    let mut child = Command::new(python)
        .arg(repo().join("tests/peer/mh_peer.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mh_peer.py");
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
    for a in &answers {
        assert!(a.get("error").is_none(), "peer error: {a}");
    }
    Some(answers)
}

const SRC: &str = "2001:db8::1";
const DST: &str = "2001:db8::2";

fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn s6(a: [u8; 16]) -> String {
    Ipv6Addr::from(a).to_string()
}

fn a4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn s4(a: [u8; 4]) -> String {
    Ipv4Addr::from(a).to_string()
}

/// Our message and options, in the peer's JSON notation.
fn to_json(msg: &Message, opts: &[MhOption<'_>], f_flag: bool) -> Value {
    let mut m = match *msg {
        Message::BindingRefreshRequest => json!({"type": 0}),
        Message::HomeTestInit { cookie } => json!({"type": 1, "cookie": hex::encode(cookie)}),
        Message::CareOfTestInit { cookie } => json!({"type": 2, "cookie": hex::encode(cookie)}),
        Message::HomeTest {
            nonce_index,
            cookie,
            keygen_token,
        } => json!({"type": 3, "index": nonce_index, "cookie": hex::encode(cookie),
                    "token": hex::encode(keygen_token)}),
        Message::CareOfTest {
            nonce_index,
            cookie,
            keygen_token,
        } => json!({"type": 4, "index": nonce_index, "cookie": hex::encode(cookie),
                    "token": hex::encode(keygen_token)}),
        Message::BindingUpdate(b) => json!({"type": 5, "seq": b.seq, "a": b.ack,
            "h": b.home_registration, "l": b.link_local_compat, "k": b.key_mgmt_compat,
            "f": f_flag, "lifetime": b.lifetime_units}),
        Message::BindingAck(b) => json!({"type": 6, "status": b.status,
            "k": b.key_mgmt_compat, "seq": b.seq, "lifetime": b.lifetime_units}),
        Message::BindingError {
            status,
            home_address,
        } => json!({"type": 7, "status": status, "home": s6(home_address)}),
        _ => panic!("no JSON for {msg:?}"),
    };
    let opts: Vec<Value> = opts
        .iter()
        .filter_map(|o| match *o {
            MhOption::Pad1 | MhOption::PadN(_) => None,
            MhOption::BindingRefreshAdvice { interval } => {
                Some(json!({"t": 2, "interval": interval}))
            }
            MhOption::AlternateCareOf(a) => Some(json!({"t": 3, "addr": s6(a)})),
            MhOption::NonceIndices { home, care_of } => {
                Some(json!({"t": 4, "home": home, "coa": care_of}))
            }
            MhOption::BindingAuthData(d) => Some(json!({"t": 5, "data": hex::encode(d)})),
            MhOption::Ipv4HomeAddress {
                prefix_len,
                request_prefix,
                addr,
            } => Some(json!({"t": 29, "plen": prefix_len, "p": request_prefix, "addr": s4(addr)})),
            MhOption::Ipv4AddressAck {
                status,
                prefix_len,
                addr,
            } => Some(json!({"t": 30, "status": status, "plen": prefix_len, "addr": s4(addr)})),
            MhOption::NatDetection {
                udp_forced,
                refresh_time,
            } => Some(json!({"t": 31, "f": udp_forced, "refresh": refresh_time})),
            MhOption::Ipv4CareOf(a) => Some(json!({"t": 32, "addr": s4(a)})),
            other => panic!("no JSON for {other:?}"),
        })
        .collect();
    m["options"] = Value::Array(opts);
    m
}

/// The test messages: (message, options, F flag).
fn cases() -> Vec<(Message, Vec<MhOption<'static>>, bool)> {
    let bu = BindingUpdate {
        seq: 4242,
        ack: true,
        home_registration: true,
        link_local_compat: true,
        key_mgmt_compat: false,
        lifetime_units: 900,
    };
    let ba = BindingAck {
        status: 0,
        key_mgmt_compat: true,
        seq: 4242,
        lifetime_units: 600,
    };
    vec![
        (
            Message::BindingUpdate(bu),
            vec![
                MhOption::AlternateCareOf(a6("2001:db8:77::9")),
                MhOption::Ipv4CareOf(a4("192.0.2.33")),
                MhOption::Ipv4HomeAddress {
                    prefix_len: 0,
                    request_prefix: false,
                    addr: a4("0.0.0.0"),
                },
            ],
            true,
        ),
        (
            Message::BindingUpdate(bu),
            vec![
                MhOption::NonceIndices {
                    home: 3,
                    care_of: 4,
                },
                MhOption::BindingAuthData(&[0x5a; 12]),
            ],
            false,
        ),
        (
            Message::BindingAck(ba),
            vec![
                MhOption::NatDetection {
                    udp_forced: true,
                    refresh_time: 110,
                },
                MhOption::Ipv4AddressAck {
                    status: 0,
                    prefix_len: 24,
                    addr: a4("10.20.30.40"),
                },
                MhOption::BindingRefreshAdvice { interval: 75 },
            ],
            false,
        ),
        (
            Message::BindingError {
                status: 2,
                home_address: a6("2001:db8:1::5"),
            },
            vec![],
            false,
        ),
        (Message::HomeTestInit { cookie: [9; 8] }, vec![], false),
        (Message::CareOfTestInit { cookie: [8; 8] }, vec![], false),
        (
            Message::HomeTest {
                nonce_index: 17,
                cookie: [1, 2, 3, 4, 5, 6, 7, 8],
                keygen_token: [0xf0; 8],
            },
            vec![],
            false,
        ),
        (
            Message::CareOfTest {
                nonce_index: 18,
                cookie: [8, 7, 6, 5, 4, 3, 2, 1],
                keygen_token: [0x0f; 8],
            },
            vec![],
            false,
        ),
        (Message::BindingRefreshRequest, vec![], false),
    ]
}

/// Our MH for a case, with checksum, in an IPv6 packet.
fn our_packet(msg: &Message, opts: &[MhOption<'_>], f_flag: bool) -> Vec<u8> {
    let n = mh_buffer_len(msg, opts);
    let mut p = vec![0u8; 40 + n];
    assert_eq!(emit_mh(&mut p[40..], msg, opts), Ok(n));
    ip::emit_ipv6_header(&mut p, a6(SRC), a6(DST), 135, n as u16, 64, 0);
    let mut mh = MhPacket::new_checked(&mut p[40..]).unwrap();
    if f_flag {
        let flags = mh.bu_flags().unwrap();
        assert!(mh.set_bu_flags(flags | bitsgw_wire::mh::bu_flags::F));
    }
    mh.fill_checksum(&a6(SRC), &a6(DST));
    p
}

#[test]
fn mobility_headers_and_mip6_headers_agree_with_scapy() {
    let cases = cases();
    let mut requests = Vec::new();
    for (msg, opts, f) in &cases {
        requests.push(json!({"op": "build_mh", "src": SRC, "dst": DST,
                             "msg": to_json(msg, opts, *f)}));
        requests.push(json!({"op": "dissect_mh",
                             "hex": hex::encode(our_packet(msg, opts, *f))}));
    }
    // Extension headers: scapy builds HAO and RH2 in front of an ESP
    // header; scapy dissects ours.
    let esp = [0u8, 0, 0x10, 0x01, 0, 0, 0, 7];
    let home = "2001:db8:1::5";
    requests.push(
        json!({"op": "build_ext", "src": SRC, "dst": DST, "hao": home,
                         "rh2": null, "tail": hex::encode(esp), "tail_nh": 50}),
    );
    requests.push(
        json!({"op": "build_ext", "src": SRC, "dst": DST, "hao": null,
                         "rh2": home, "tail": hex::encode(esp), "tail_nh": 50}),
    );
    let mut plain = vec![0u8; 40];
    ip::emit_ipv6_header(&mut plain, a6(SRC), a6(DST), 50, 8, 64, 0);
    plain.extend_from_slice(&esp);
    let mut with_hao = PacketBuf::from_slice(&plain);
    mip6::insert_home_address_option(&mut with_hao, a6(home)).unwrap();
    let mut with_rh2 = PacketBuf::from_slice(&plain);
    mip6::insert_type2_routing_header(&mut with_rh2, a6(home)).unwrap();
    requests.push(json!({"op": "dissect_ext", "hex": hex::encode(with_hao.data())}));
    requests.push(json!({"op": "dissect_ext", "hex": hex::encode(with_rh2.data())}));

    let Some(answers) = peer(&requests) else {
        return;
    };

    for (i, (msg, opts, f)) in cases.iter().enumerate() {
        let want = to_json(msg, opts, *f);
        // (1) scapy built it: we parse the same fields, and the checksum.
        let pkt = hex::decode(answers[2 * i]["hex"].as_str().unwrap()).unwrap();
        assert_eq!(pkt[6], 135);
        let p = MhPacket::new_checked(&pkt[40..]).unwrap();
        assert!(p.verify_checksum(&a6(SRC), &a6(DST)), "{msg:?}");
        let r = MhRepr::parse(&p).unwrap();
        assert_eq!(&r.message, msg);
        let got: Vec<MhOption<'_>> = r.options().collect();
        let f_got = p.bu_flags().is_some_and(|x| x & 0x0100 != 0);
        assert_eq!(
            to_json(&r.message, &got, f_got),
            want,
            "scapy-built {msg:?}"
        );
        // Scapy and we lay out the options the same way.
        assert_eq!(
            &pkt[40..],
            &our_packet(msg, opts, *f)[40..],
            "layout of {msg:?}"
        );
        // (2) we built it: scapy reads the same fields and agrees on the
        // checksum.
        let d = &answers[2 * i + 1];
        assert_eq!(d["msg"], want, "scapy dissecting our {msg:?}");
        assert_eq!(d["cksum_ok"], json!(true), "checksum of our {msg:?}");
        assert_eq!(d["mh_len"], json!(mh_buffer_len(msg, opts)));
    }
    let base = 2 * cases.len();
    // Scapy's HAO packet: we find, swap and remove the option.
    let mut hao =
        PacketBuf::from_slice(&hex::decode(answers[base]["hex"].as_str().unwrap()).unwrap());
    let at = mip6::find_home_address_option(hao.data()).unwrap().unwrap();
    assert_eq!(&hao.data()[at..at + 16], &a6(home));
    assert_eq!(hao.data(), with_hao.data(), "same HAO layout as scapy");
    assert_eq!(mip6::swap_home_address(hao.data_mut()), Ok(a6(home)));
    mip6::remove_home_address_option(&mut hao).unwrap();
    assert_eq!(&hao.data()[8..24], &a6(home));
    assert_eq!(&hao.data()[40..], &esp);
    // Scapy's RH2 packet: we process it.
    let mut rh2 =
        PacketBuf::from_slice(&hex::decode(answers[base + 1]["hex"].as_str().unwrap()).unwrap());
    assert_eq!(rh2.data(), with_rh2.data(), "same RH2 layout as scapy");
    assert_eq!(
        mip6::process_type2_routing_header(rh2.data_mut()),
        Ok(a6(home))
    );
    mip6::remove_type2_routing_header(&mut rh2).unwrap();
    assert_eq!(&rh2.data()[24..40], &a6(home));
    assert_eq!(&rh2.data()[40..], &esp);
    // Scapy reading ours.
    let d = &answers[base + 2];
    assert_eq!(d["hao"], json!(home));
    assert_eq!(d["chain"], json!([60, 50]));
    assert_eq!(d["plen_ok"], json!(true));
    assert_eq!(d["tail"], json!(hex::encode(esp)));
    let d = &answers[base + 3];
    assert_eq!(d["rh2"], json!(home));
    assert_eq!(d["segleft"], json!(1));
    assert_eq!(d["chain"], json!([43, 50]));
    assert_eq!(d["plen_ok"], json!(true));
    assert_eq!(d["tail"], json!(hex::encode(esp)));
}
