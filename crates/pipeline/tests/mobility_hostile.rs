//! Hostile input against the mobility stage in the pipeline: arbitrary
//! and half-valid packets from the network into a home agent and a mobile
//! node (the tunnel stage's decapsulation, Home Address option and type 2
//! routing header handling, then IPsec and the protocol module). Nothing
//! panics, every drop is counted, and nothing reaches the host side that
//! the IPsec stage did not deliver.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_mobility::ha::{HaConfig, HomeAgent, ServedNode, DEFAULT_NAT_REFRESH};
use bitsgw_mobility::mn::{Attachment, MnConfig, MobileNode};
use bitsgw_pipeline::{Gateway, LinkType, Mobility, NoTap, Outcome, Side};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use proptest::prelude::*;
use std::path::PathBuf;

const HA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const HOA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const COA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const HA4: [u8; 4] = [203, 0, 113, 1];
const COA4: [u8; 4] = [203, 0, 113, 20];

fn stage(name: &str) -> IpsecStage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies")
        .join(name);
    let set = common::policy_file(&path);
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn nodes() -> (Gateway, Gateway) {
    let mut ha = Gateway::new(stage("dsmip-hostwide-ha.json"));
    ha.set_mobility(Mobility::HomeAgent(HomeAgent::new(HaConfig {
        address: HA,
        address_v4: Some(HA4),
        home_prefixes: vec![(HA, 64)],
        nodes: vec![ServedNode {
            home: HOA,
            home_v4: None,
        }],
        ipv4_pool: vec![],
        ipv4_prefix_len: 24,
        max_lifetime: Duration::from_secs(600),
        nat_refresh: DEFAULT_NAT_REFRESH,
        force_udp: false,
        key_management_mobility: false,
    })));
    let mut mn = Gateway::new(stage("dsmip-hostwide-mn.json"));
    let mut cfg = MnConfig::new(HOA, HA);
    cfg.home_agent_v4 = Some(HA4);
    let mut m = MobileNode::new(cfg);
    // Two care-of addresses owned: IPv6 registered-to-be and IPv4.
    m.handle_move(Attachment::V6(COA), true, Timestamp::ZERO);
    m.handle_move(Attachment::V4(COA4), true, Timestamp::ZERO);
    mn.set_mobility(Mobility::MobileNode(m));
    (ha, mn)
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    bitsgw_wire::ip::emit_ipv6_header(&mut p, src, dst, next, body.len() as u16, 64, 0);
    p.extend_from_slice(body);
    p
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    bitsgw_wire::ip::emit_ipv4_header(
        &mut p,
        src,
        dst,
        proto,
        (20 + body.len()) as u16,
        64,
        1,
        0,
        false,
    );
    p.extend_from_slice(body);
    p
}

/// Half-valid shapes, so the fuzzing gets past the first checks.
fn shaped(kind: u8, a: &[u8], b: &[u8]) -> Vec<u8> {
    match kind % 8 {
        0 => a.to_vec(),
        // IPv4/UDP to port 4191 with anything inside (garbage, or an IPv6
        // packet with a random body).
        1 => {
            let inner = if b.first().is_some_and(|x| x & 1 == 1) {
                ipv6(HOA, HA, 50, a)
            } else {
                a.to_vec()
            };
            let mut udp = vec![0x10, 0x5f, 0x10, 0x5f, 0, 0, 0, 0];
            let len = (8 + inner.len()) as u16;
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            udp.extend_from_slice(&inner);
            ipv4([198, 51, 100, 9], HA4, 17, &udp)
        }
        // IPv6 from a care-of address with a Destination Options header of
        // random options, then ESP.
        2 => {
            let mut h = vec![50, (a.len() / 8).min(4) as u8];
            h.extend_from_slice(a);
            h.resize(2 + usize::from(h[1]) * 8 + 6, 1);
            h.extend_from_slice(b);
            ipv6(COA, HA, 60, &h)
        }
        // IPv6 from the HA to a care-of address with a random routing header.
        3 => {
            let mut h = vec![50, (a.len() / 8).min(4) as u8];
            h.extend_from_slice(a);
            h.resize(2 + usize::from(h[1]) * 8 + 6, 0);
            h.extend_from_slice(b);
            ipv6(HA, COA, 43, &h)
        }
        // IP-in-IP from the home agent to the IPv4 care-of address.
        4 => ipv4(HA4, COA4, 41, a),
        5 => ipv4(HA4, COA4, 4, a),
        // UDP from the home agent to the mobile node's port.
        6 => {
            let mut udp = vec![0x10, 0x5f, 0x10, 0x5f, 0, 0, 0, 0];
            udp[4..6].copy_from_slice(&((8 + a.len()) as u16).to_be_bytes());
            udp.extend_from_slice(a);
            ipv4(HA4, COA4, 17, &udp)
        }
        // An MH to the home agent, in clear.
        _ => ipv6(HOA, HA, 135, a),
    }
}

fn feed(gw: &mut Gateway, pkt: &[u8]) -> Result<(), TestCaseError> {
    let before = gw.mobility().unwrap().counters().total_drops();
    let mut to_host = 0;
    let mut buf = PacketBuf::from_slice(pkt);
    let o = gw.handle_frame(
        Side::Network,
        LinkType::RawIp,
        &mut buf,
        Timestamp::from_secs(1),
        &mut |side, _| {
            if side == Side::Host {
                to_host += 1;
            }
        },
        &mut NoTap,
    );
    let after = gw.mobility().unwrap().counters().total_drops();
    match o {
        Outcome::MobilityDrop(r) => {
            prop_assert_eq!(after, before + 1, "{} counted", r);
        }
        Outcome::Ipsec(Disposition::Deliver) => prop_assert!(to_host <= 1),
        _ => prop_assert_eq!(to_host, 0),
    }
    Ok(())
}

thread_local! {
    /// One pair of nodes per test thread, kept across cases (so state that
    /// hostile input leaves behind is exercised too).
    static NODES: std::cell::RefCell<(Gateway, Gateway)> = std::cell::RefCell::new(nodes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60_000))]
    #[test]
    fn home_agent_never_panics_and_counts(kind: u8, a in proptest::collection::vec(any::<u8>(), 0..96), b in proptest::collection::vec(any::<u8>(), 0..64)) {
        NODES.with(|n| feed(&mut n.borrow_mut().0, &shaped(kind, &a, &b)))?;
    }

    #[test]
    fn mobile_node_never_panics_and_counts(kind: u8, a in proptest::collection::vec(any::<u8>(), 0..96), b in proptest::collection::vec(any::<u8>(), 0..64)) {
        NODES.with(|n| feed(&mut n.borrow_mut().1, &shaped(kind, &a, &b)))?;
    }
}
