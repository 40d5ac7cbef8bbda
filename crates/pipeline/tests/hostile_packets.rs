//! Hostile packets through the real pipeline: each case of
//! `common::cases` (truncations, length lies, bad ICV, wrong key, bad
//! padding, unknown SPI, replays, expired SAs, selector mismatches, ESP in
//! UDP garbage, fragments, cleartext for a PROTECT policy) and of
//! `common::layer2_cases` (IP behind VLAN tags and in other framings) is
//! replayed through a fresh gateway A (`policies/site-to-site-a.json`) on
//! Ethernet ports, and must end exactly as the case says: the named drop
//! counters that moved and by how much, what left each port. On the
//! network side nothing leaves but ESP, and no frame there carries a test
//! payload in clear.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::DropReason;
use bitsgw_pipeline::replay::{self, ReplayInput};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, PipelineDrop, Side};
use common::*;

/// Every drop counter of `gw` that is not zero.
fn moved(gw: &Gateway) -> Vec<(Counter, u64)> {
    let stage = gw.stage().counters();
    let mut out: Vec<(Counter, u64)> = DropReason::ALL
        .iter()
        .map(|r| (Counter::Stage(*r), stage.drops(*r)))
        .chain(
            PipelineDrop::ALL
                .iter()
                .map(|r| (Counter::Pipeline(*r), gw.counters().drops(*r))),
        )
        .filter(|(_, n)| *n != 0)
        .collect();
    out.sort_by_key(|(c, _)| format!("{c:?}"));
    out
}

fn counter_name(c: &Counter) -> &'static str {
    match c {
        Counter::Stage(r) => r.name(),
        Counter::Pipeline(r) => r.name(),
    }
}

fn is_icmp(frame: &[u8]) -> bool {
    match frame.get(14).map(|b| b >> 4) {
        Some(4) => frame.get(14 + 9) == Some(&1),
        Some(6) => frame.get(14 + 6) == Some(&58),
        _ => false,
    }
}

/// Runs one case through a fresh gateway; returns what went wrong, if
/// anything.
fn check(case: &Case) -> Option<String> {
    let mut gw = gateway_a();
    let inputs: Vec<ReplayInput> = [Side::Host, Side::Network]
        .into_iter()
        .map(|side| ReplayInput {
            side,
            link: LinkType::Ethernet,
            frames: case
                .frames
                .iter()
                .filter(|f| f.side == side)
                .map(|f| (f.at, f.bytes.clone()))
                .collect(),
        })
        .collect();
    let out = replay::run(&mut gw, &inputs, Vec::new(), &mut NoTap);
    let mut problems = Vec::new();
    let mut want = case.expect.drops.clone();
    want.sort_by_key(|(c, _)| format!("{c:?}"));
    let got = moved(&gw);
    if got != want {
        problems.push(format!("drops {got:?}, expected {want:?}"));
    }
    if out.host.len() != case.expect.host_out {
        problems.push(format!(
            "{} frames to the host, expected {}",
            out.host.len(),
            case.expect.host_out
        ));
    }
    let icmp = out.host.iter().filter(|(_, f)| is_icmp(f)).count();
    if icmp != case.expect.icmp {
        problems.push(format!("{icmp} ICMP errors, expected {}", case.expect.icmp));
    }
    if out.network.len() != case.expect.net_out {
        problems.push(format!(
            "{} frames to the network, expected {}",
            out.network.len(),
            case.expect.net_out
        ));
    }
    // Fail closed: the network side sees ESP only, never a payload.
    for (_, f) in &out.network {
        if !is_esp(f) || carries_mark(f) {
            problems.push(format!("cleartext on the network side: {f:02x?}"));
        }
    }
    (!problems.is_empty()).then(|| format!("{}: {}", case.name, problems.join("; ")))
}

#[test]
fn every_hostile_packet_ends_on_its_named_counter() {
    let mut peer = Peer::new();
    let mut cases = cases(&mut peer);
    cases.extend(layer2_cases(&mut peer));
    let mut failures = Vec::new();
    for case in &cases {
        let names: Vec<String> = case
            .expect
            .drops
            .iter()
            .map(|(c, n)| format!("{} x{n}", counter_name(c)))
            .collect();
        println!(
            "{:<64} {}",
            case.name,
            if names.is_empty() {
                "(passed)".to_string()
            } else {
                names.join(", ")
            }
        );
        failures.extend(check(case));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The same cases back to back through one gateway (where their sequence
/// numbers now meet in one window): frames in equal frames out plus drops
/// plus fragments absorbed into a reassembled datagram, less the packets
/// answered with an ICMP error (counted as a drop and sent).
#[test]
fn all_cases_through_one_gateway_reconcile() {
    let mut peer = Peer::new();
    let mut cases = cases(&mut peer);
    cases.extend(layer2_cases(&mut peer));
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.settles && !c.name.contains("hard-expired"))
        .collect();
    let mut gw = gateway_a();
    let mut frames_in = 0u64;
    let mut out_frames = 0u64;
    for (i, case) in cases.iter().enumerate() {
        for f in &case.frames {
            let inputs = vec![ReplayInput {
                side: f.side,
                link: LinkType::Ethernet,
                frames: vec![(
                    bitsgw_wire::Timestamp::from_millis(i as u64),
                    f.bytes.clone(),
                )],
            }];
            let out = replay::run(&mut gw, &inputs, Vec::new(), &mut NoTap);
            frames_in += 1;
            out_frames += (out.host.len() + out.network.len()) as u64;
            assert!(out
                .network
                .iter()
                .all(|(_, f)| is_esp(f) && !carries_mark(f)));
        }
    }
    let stage = gw.stage().counters();
    let drops = stage.total_drops() + gw.counters().total_drops();
    // Each reassembled datagram here is two fragments: one absorbed.
    assert_eq!(stage.reassembled, 1);
    // A packet too big is counted under too_big_icmp_sent and answered
    // with an ICMP error: one frame in, one out, one count.
    let answered = stage.drops(DropReason::TooBig);
    assert_eq!(answered, 1);
    assert_eq!(frames_in, out_frames + drops - answered + stage.reassembled);
}
