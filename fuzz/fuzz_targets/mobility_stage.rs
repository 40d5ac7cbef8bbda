#![no_main]
//! Any packet from the network into a home agent or a mobile node (byte 0
//! picks which): the mobility tunnel stage, the IPsec stage and the
//! protocol module never panic, and a packet the mobility stage drops is
//! counted.

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_mobility::ha::{HaConfig, HomeAgent, ServedNode, DEFAULT_NAT_REFRESH};
use bitsgw_mobility::mn::{Attachment, MnConfig, MobileNode};
use bitsgw_pipeline::{Gateway, LinkType, Mobility, NoTap, Outcome, Side};
use bitsgw_wire::{PacketBuf, Timestamp};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::time::Duration;

const HA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const HOA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const COA: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

fn stage(text: &str) -> IpsecStage {
    let set = parse_policy(text, "fuzz.json").expect("policy");
    let mut s = IpsecStage::new(StageConfig::default());
    set.apply(&mut s, Timestamp::ZERO).expect("apply");
    s
}

fn nodes() -> (Gateway, Gateway) {
    let mut ha = Gateway::new(stage(include_str!("../../policies/dsmip-hostwide-ha.json")));
    ha.set_mobility(Mobility::HomeAgent(HomeAgent::new(HaConfig {
        address: HA,
        address_v4: Some([203, 0, 113, 1]),
        home_prefixes: vec![(HA, 64)],
        nodes: vec![ServedNode { home: HOA, home_v4: Some([192, 0, 2, 100]) }],
        ipv4_pool: vec![],
        ipv4_prefix_len: 24,
        max_lifetime: Duration::from_secs(600),
        nat_refresh: DEFAULT_NAT_REFRESH,
        force_udp: false,
        key_management_mobility: false,
    })));
    let mut mn = Gateway::new(stage(include_str!("../../policies/dsmip-hostwide-mn.json")));
    let mut cfg = MnConfig::new(HOA, HA);
    cfg.home_agent_v4 = Some([203, 0, 113, 1]);
    let mut m = MobileNode::new(cfg);
    m.handle_move(Attachment::V6(COA), true, Timestamp::ZERO);
    m.handle_move(Attachment::V4([203, 0, 113, 20]), true, Timestamp::ZERO);
    mn.set_mobility(Mobility::MobileNode(m));
    (ha, mn)
}

thread_local! {
    static NODES: RefCell<(Gateway, Gateway)> = RefCell::new(nodes());
}

fuzz_target!(|data: &[u8]| {
    let [pick, pkt @ ..] = data else {
        return;
    };
    NODES.with(|n| {
        let mut n = n.borrow_mut();
        let gw = if pick & 1 == 0 { &mut n.0 } else { &mut n.1 };
        let before = gw.mobility().map_or(0, |m| m.counters().total_drops());
        let mut buf = PacketBuf::from_slice(pkt);
        let o = gw.handle_frame(Side::Network, LinkType::RawIp, &mut buf, Timestamp::from_secs(1), &mut |_, _| {}, &mut NoTap);
        let after = gw.mobility().map_or(0, |m| m.counters().total_drops());
        if let Outcome::MobilityDrop(_) = o {
            assert_eq!(after, before + 1);
        }
    });
});
