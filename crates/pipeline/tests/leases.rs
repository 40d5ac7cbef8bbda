//! Sequence leases in the threaded runner: each outbound SA is leased by
//! the one thread that sends with it, before its first packet, so nothing
//! waits or is dropped for want of a lease, and the numbers on the wire
//! start above the keeper's floor.
#![allow(clippy::unwrap_used)]

mod common;

use bitsgw_ipsec::{DropReason, IpsecStage, LeaseRequest, StageConfig};
use bitsgw_pipeline::lease::{Lease, LeaseError, LeaseKeeper};
use bitsgw_pipeline::runner::{self, RunnerConfig};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::Timestamp;
use common::chan::port;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Numbers up to this one count as sent before the test started.
const FLOOR: u64 = 7000;

/// Grants every request above `FLOOR` and records which SPIs asked.
#[derive(Default)]
struct Recording {
    asked: Mutex<Vec<u32>>,
}

impl LeaseKeeper for Recording {
    fn lease(&self, requests: &[LeaseRequest]) -> Result<Vec<Lease>, LeaseError> {
        let mut asked = self.asked.lock().unwrap();
        Ok(requests
            .iter()
            .map(|r| {
                asked.push(r.spi);
                Lease::next(FLOOR, r)
            })
            .collect())
    }
}

fn leased_stage() -> IpsecStage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/site-to-site-a.json");
    let set = common::policy_file(&path);
    let mut stage = IpsecStage::new(StageConfig {
        sequence_leases: true,
        ..StageConfig::default()
    });
    set.apply(&mut stage, Timestamp::ZERO).unwrap();
    stage
}

fn run(cfg: &RunnerConfig) {
    let keeper = Arc::new(Recording::default());
    let (host, host_in, _host_out) = port();
    let (net, _net_in, net_out) = port();
    let for_gateways = Arc::clone(&keeper);
    let a = runner::start_configured(
        cfg,
        host,
        net,
        &leased_stage,
        &|_| None,
        &|| None,
        &|gw| gw.set_lease_keeper(for_gateways.clone()),
        None,
    );
    let (v4, v6) = (
        udp_packet(
            "192.0.2.10".parse().unwrap(),
            "198.51.100.20".parse().unwrap(),
            1,
            2,
            64,
        ),
        udp_packet(
            "2001:db8:a::10".parse().unwrap(),
            "2001:db8:b::20".parse().unwrap(),
            1,
            2,
            64,
        ),
    );
    for n in 0..200 {
        host_in
            .send(if n % 2 == 0 { v4.clone() } else { v6.clone() })
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seqs = Vec::new();
    while seqs.len() < 200 {
        let Ok(f) = net_out.recv_deadline(deadline) else {
            break;
        };
        let esp = if f[0] >> 4 == 4 { &f[20..] } else { &f[40..] };
        seqs.push(u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]));
    }
    let (report, failure) = a.stop();
    assert_eq!(failure, None);
    assert_eq!(seqs.len(), 200, "{:?}", report.stage);
    assert_eq!(report.stage.drops(DropReason::SeqLeaseExhausted), 0);
    // Each SA's numbers run on from just above the floor.
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100, "one number per packet and SA");
    assert_eq!(sorted.first(), Some(&(FLOOR as u32 + 1)));
    assert_eq!(sorted.last(), Some(&(FLOOR as u32 + 100)));
    // The two outbound SAs asked once each, from the thread that owns them.
    let mut asked = keeper.asked.lock().unwrap().clone();
    asked.sort_unstable();
    assert_eq!(asked, [0x3001, 0x3003]);
}

#[test]
fn workers_lease_their_own_sas_before_the_first_packet() {
    run(&RunnerConfig {
        workers: 2,
        queue_depth: 1024,
        run_to_completion: false,
    });
}

#[test]
fn run_to_completion_leases_before_the_first_packet() {
    run(&RunnerConfig {
        workers: 1,
        queue_depth: 1024,
        run_to_completion: true,
    });
}
