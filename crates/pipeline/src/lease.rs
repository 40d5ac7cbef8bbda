//! Sequence-number leases: how outbound SAs with static keys never send a
//! (key, sequence number) pair twice, restarts included.
//!
//! The IPsec stage lets an outbound SA under leases send only up to the
//! ceiling it was granted ([`IpsecStage::grant_lease`]); past it, packets
//! are dropped as `seq_lease_exhausted`. A [`LeaseKeeper`] (the appliance's
//! keeps its leases in a state file, written and synced before it answers)
//! decides the grants. The worker that owns an SA asks it once per loop,
//! and only when the stage has raised a request (one flag), so the data
//! path never waits in steady state: a lease is [`LEASE_BLOCK`] numbers and
//! is renewed half way.

use bitsgw_ipsec::{IpsecStage, LeaseRequest};
use bitsgw_wire::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Sequence numbers leased at a time (renewed half way, so one renewal
/// per 2^19 packets of an SA).
pub const LEASE_BLOCK: u64 = 1 << 20;

/// How long a worker waits before asking a keeper again after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A grant: the SA's next sequence number is above `floor` and at most
/// `ceiling` may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Sequence numbers up to this one may have been sent under the key.
    pub floor: u64,
    /// The highest sequence number that may be sent.
    pub ceiling: u64,
}

impl Lease {
    /// The lease that answers `request` when `stored` is the highest
    /// ceiling ever granted under its identity (0: none). A renewal
    /// (the SA holds the stored ceiling) continues where the SA is; an SA
    /// installed anew under a key already used (a restart, a re-added SA)
    /// starts above everything leased before.
    pub fn next(stored: u64, request: &LeaseRequest) -> Lease {
        let floor = if stored > request.ceiling {
            stored
        } else {
            request.last_sent
        };
        Lease {
            floor,
            ceiling: stored
                .max(request.last_sent)
                .max(floor)
                .saturating_add(LEASE_BLOCK),
        }
    }
}

/// Why leases could not be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The leases could not be made durable.
    #[error("sequence leases for {sas} SA(s) not stored: {problem}")]
    Store {
        /// How many SAs asked.
        sas: usize,
        /// What went wrong.
        problem: String,
    },
}

/// Grants leases, durably: a lease is returned only once it survives a
/// crash of the process. Shared by the workers; an implementation takes a
/// lock only to extend leases.
pub trait LeaseKeeper: Send + Sync {
    /// One lease per request, in order, all recorded before they are
    /// returned (so a start with many SAs costs one write, not one each).
    fn lease(&self, requests: &[LeaseRequest]) -> Result<Vec<Lease>, LeaseError>;
}

/// A gateway's side of the leases: its keeper and the requests it is
/// answering.
pub struct LeaseServer {
    keeper: Arc<dyn LeaseKeeper>,
    requests: Vec<LeaseRequest>,
    retry_at: Timestamp,
    failures: u64,
}

impl core::fmt::Debug for LeaseServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LeaseServer")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl LeaseServer {
    /// A server that asks `keeper`.
    pub fn new(keeper: Arc<dyn LeaseKeeper>) -> Self {
        LeaseServer {
            keeper,
            requests: Vec::new(),
            retry_at: Timestamp::ZERO,
            failures: 0,
        }
    }

    /// Leases the keeper could not grant (each failure leaves its SA
    /// dropping packets as `seq_lease_exhausted` until a later grant).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Answers the stage's lease requests (a stage raises them only for the
    /// SAs it owns: the others are another worker's to send with, and to
    /// lease). Nothing happens unless the stage has asked. After a failure, requests are
    /// left for a second before the keeper is asked again; the SA's next
    /// packet raises its request anew.
    pub fn serve(&mut self, stage: &mut IpsecStage, now: Timestamp) {
        if !stage.wants_leases() || now < self.retry_at {
            return;
        }
        self.requests.clear();
        stage.take_lease_requests(&mut self.requests);
        if self.requests.is_empty() {
            return;
        }
        match self.keeper.lease(&self.requests) {
            Ok(leases) => {
                for (request, lease) in self.requests.iter().zip(leases) {
                    stage.grant_lease(request.sa, lease.floor, lease.ceiling);
                }
            }
            Err(_) => {
                self.failures += 1;
                self.retry_at = now.saturating_add(RETRY_AFTER);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bitsgw_ipsec::StageConfig;

    /// A stage under leases with one outbound SA, and its first request.
    fn leased() -> (IpsecStage, LeaseRequest) {
        let set = bitsgw_ipsec::config::parse_policy(
            r#"{"spd": {"outbound": [{"name": "all", "action": "protect", "sa": "out"}]},
                "sad": [{"name": "out", "direction": "outbound", "spi": 4096,
                         "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"},
                         "transform": "aes-cbc-128-hmac-sha256",
                         "enc_key": "0x000102030405060708090a0b0c0d0e0f",
                         "auth_key": "0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"}]}"#,
            "t.json",
        )
        .unwrap();
        let mut stage = IpsecStage::new(StageConfig {
            sequence_leases: true,
            ..StageConfig::default()
        });
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        let mut requests = Vec::new();
        stage.take_lease_requests(&mut requests);
        (stage, requests.remove(0))
    }

    fn request(last_sent: u64, ceiling: u64) -> LeaseRequest {
        LeaseRequest {
            last_sent,
            ceiling,
            ..leased().1
        }
    }

    struct Refusing;
    impl LeaseKeeper for Refusing {
        fn lease(&self, requests: &[LeaseRequest]) -> Result<Vec<Lease>, LeaseError> {
            Err(LeaseError::Store {
                sas: requests.len(),
                problem: "disk full".into(),
            })
        }
    }

    struct Granting;
    impl LeaseKeeper for Granting {
        fn lease(&self, requests: &[LeaseRequest]) -> Result<Vec<Lease>, LeaseError> {
            Ok(requests.iter().map(|r| Lease::next(500, r)).collect())
        }
    }

    /// The server grants what the keeper says, only for SAs the stage
    /// owns; a keeper's failure leaves the SA without numbers and is
    /// counted, and the keeper is not asked again at once.
    #[test]
    fn the_server_grants_owned_sas_and_counts_failures() {
        let (mut stage, request) = leased();
        // Give the request back: a packet past the (empty) lease raises it.
        let mut b = bitsgw_wire::PacketBuf::from_slice(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 59, 0, 0, 198, 51, 100, 1, 198, 51, 100, 2,
        ]);
        let _ = stage.handle_outbound(&mut b, Timestamp::ZERO);
        let mut server = LeaseServer::new(Arc::new(Refusing));
        server.serve(&mut stage, Timestamp::ZERO);
        assert_eq!(server.failures(), 1);
        assert_eq!(stage.sad().get(request.sa).unwrap().seq_ceiling(), Some(0));
        let _ = stage.handle_outbound(&mut b, Timestamp::ZERO);
        let mut server = LeaseServer::new(Arc::new(Granting));
        // A stage that does not own the SA neither sends with it nor asks.
        let (mut other, _) = leased();
        other.set_ownership(bitsgw_ipsec::ownership::StageOwnership::Observer { workers: 1 });
        other.take_lease_requests(&mut Vec::new());
        let _ = other.handle_outbound(&mut b.clone(), Timestamp::ZERO);
        assert!(!other.wants_leases());
        server.serve(&mut other, Timestamp::ZERO);
        assert_eq!(other.sad().get(request.sa).unwrap().seq_ceiling(), None);
        server.serve(&mut stage, Timestamp::ZERO);
        let sa = stage.sad().get(request.sa).unwrap();
        assert_eq!(sa.seq_ceiling(), Some(500 + LEASE_BLOCK));
        assert_eq!(sa.seq(), 500);
    }

    /// A fresh SA under a new key starts at 1; under a key that leased
    /// before (restart, re-add) it starts above the old ceiling; a renewal
    /// extends the ceiling without skipping what the SA still holds.
    #[test]
    fn leases_continue_above_everything_granted_before() {
        assert_eq!(
            Lease::next(0, &request(0, 0)),
            Lease {
                floor: 0,
                ceiling: LEASE_BLOCK
            }
        );
        let restarted = Lease::next(3 * LEASE_BLOCK, &request(0, 0));
        assert_eq!(restarted.floor, 3 * LEASE_BLOCK);
        assert_eq!(restarted.ceiling, 4 * LEASE_BLOCK);
        let renewal = Lease::next(LEASE_BLOCK, &request(LEASE_BLOCK / 2, LEASE_BLOCK));
        assert_eq!(renewal.floor, LEASE_BLOCK / 2);
        assert_eq!(renewal.ceiling, 2 * LEASE_BLOCK);
    }
}
