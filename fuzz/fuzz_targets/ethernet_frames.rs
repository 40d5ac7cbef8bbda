#![no_main]
//! Any Ethernet frame (VLAN tags, QinQ, 802.3 lengths, unknown EtherTypes,
//! truncated headers) into an inline gateway of the site-to-site policy,
//! from either side (byte 0 picks which), with the default layer-2 policy.
//! Nothing panics, and the gateway fails closed at layer 2: what it sends
//! on is ARP or IP behind at most the tags it understands, never anything
//! else; IP sent to the network is ESP or what an outbound BYPASS entry
//! selects; IP sent to the host was decrypted or is what an inbound BYPASS
//! entry selects.

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::flow::flow_key;
use bitsgw_ipsec::query::PolicyAction;
use bitsgw_ipsec::sa::Direction;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Side};
use bitsgw_wire::ether::{Layer2, ETHERTYPE_ARP};
use bitsgw_wire::{ip, proto, PacketBuf, Timestamp};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

fn gateway() -> Gateway {
    let set = parse_policy(include_str!("../../policies/site-to-site-a.json"), "fuzz.json")
        .expect("policy");
    let mut s = IpsecStage::new(StageConfig::default());
    set.apply(&mut s, Timestamp::ZERO).expect("apply");
    Gateway::new(s)
}

thread_local! {
    static GATEWAY: RefCell<Gateway> = RefCell::new(gateway());
}

/// Whether `frame`, sent to `to`, is one the gateway may send.
fn allowed(gw: &Gateway, to: Side, frame: &[u8], decrypted: bool) -> bool {
    let Some(l2) = Layer2::parse(frame) else {
        return false;
    };
    if l2.ethertype == ETHERTYPE_ARP {
        return true;
    }
    if !l2.is_ip() {
        return false;
    }
    let pkt = &frame[l2.header_len..];
    let Ok(meta) = ip::parse(pkt) else {
        return false;
    };
    let direction = match to {
        Side::Network if meta.proto == proto::ESP => return true,
        Side::Network => Direction::Outbound,
        Side::Host if decrypted => return true,
        Side::Host => Direction::Inbound,
    };
    let q = gw.stage().query();
    let key = flow_key(pkt, &meta, direction);
    let entry = q.lookup(direction, &key).and_then(|id| q.entry(id));
    entry.is_some_and(|e| e.action == PolicyAction::Bypass)
}

fuzz_target!(|data: &[u8]| {
    let [pick, frame @ ..] = data else {
        return;
    };
    let from = if pick & 1 == 0 { Side::Host } else { Side::Network };
    GATEWAY.with(|g| {
        let mut gw = g.borrow_mut();
        let before = gw.stage().counters().inbound_decrypted;
        let mut buf = PacketBuf::from_slice(frame);
        let mut sent = Vec::new();
        gw.handle_frame(
            from,
            LinkType::Ethernet,
            &mut buf,
            Timestamp::from_secs(1),
            &mut |to, f| sent.push((to, f.to_vec())),
            &mut NoTap,
        );
        let decrypted = gw.stage().counters().inbound_decrypted > before;
        for (to, f) in &sent {
            assert!(allowed(&gw, *to, f, decrypted), "{to:?}: {f:02x?}");
        }
    });
});
