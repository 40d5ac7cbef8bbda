//! Acquire (RFC 4301 5.1, 4.4.1): an outbound packet that a PROTECT entry
//! covers, whose SA key management has not installed yet, asks key
//! management to negotiate it. The packet itself is dropped and counted
//! (`acquire_pending`), never sent in clear; RFC 4301 lets an
//! implementation queue it instead, and dropping keeps the stage free of
//! per-packet state while the negotiation runs.
//!
//! The request is an [`AcquireSignal`] per SA name, shared with key
//! management: raising it is a load and, at most once per negotiation, a
//! store to one flag, so a flood of packets costs neither an allocation
//! nor a lock; key management takes the flag, decides whether and when
//! to negotiate (one negotiation at a time, a back-off after a failure)
//! and installs the SA through the stage's install path.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One SA name's pending acquire, set by the stages and taken by key
/// management.
#[derive(Debug, Default)]
pub struct AcquireSignal(AtomicBool);

impl AcquireSignal {
    /// Asks for the SA. Reads first, so packets that find the request
    /// already raised do not write the shared line.
    #[inline]
    pub fn raise(&self) {
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the SA was asked for since the last take; lowers the flag.
    pub fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}

impl IpsecStage {
    /// Packets that PROTECT entries send with the SA named `sa_name`,
    /// while it is not installed, raise `signal` and are dropped as
    /// `acquire_pending` (instead of `no_sa`). Management API: set when
    /// the stage is built; kept across policy reloads.
    pub fn set_acquire(&mut self, sa_name: &str, signal: Arc<AcquireSignal>) {
        let id = self.sad.name_id(sa_name);
        self.acquires.insert(id, signal);
    }

    /// Drops a packet for want of the SA named `name`: as an acquire,
    /// raised, if key management negotiates that SA on demand. Takes the
    /// fields it needs, so the SPD entry being walked stays borrowed.
    #[inline]
    pub(super) fn missing_sa(
        acquires: &FxHashMap<NameId, Arc<AcquireSignal>>,
        counters: &mut StageCounters,
        name: NameId,
    ) -> Disposition {
        let reason = match acquires.get(&name) {
            Some(signal) => {
                signal.raise();
                DropReason::AcquirePending
            }
            None => DropReason::NoSa,
        };
        counters.record(reason);
        Disposition::Drop(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy;

    const POLICY: &str = r#"{
      "spd": {
        "outbound": [
          {"name": "out", "local": "192.0.2.0/24", "remote": "198.51.100.0/24",
           "action": "protect", "sa": "a-to-b"}
        ],
        "inbound": [
          {"name": "in", "local": "192.0.2.0/24", "remote": "198.51.100.0/24",
           "action": "protect", "sa": "b-to-a"}
        ]
      },
      "sad": [
        {"name": "a-to-b", "direction": "outbound", "keyed_by": "ike", "mode": "tunnel",
         "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}},
        {"name": "b-to-a", "direction": "inbound", "keyed_by": "ike", "mode": "tunnel",
         "tunnel": {"local": "203.0.113.1", "remote": "203.0.113.2"}}
      ]
    }"#;

    fn packet() -> PacketBuf {
        PacketBuf::from_slice(&bitsgw_wire::craft::udp_packet(
            [192, 0, 2, 10].into(),
            [198, 51, 100, 20].into(),
            12345,
            12345,
            8,
        ))
    }

    #[test]
    fn a_missing_ike_keyed_sa_raises_its_acquire_and_drops_the_packet() {
        let set = parse_policy(POLICY, "acquire.json").unwrap();
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        // Without an acquire signal: no_sa, as before.
        let mut b = packet();
        assert_eq!(
            stage.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Drop(DropReason::NoSa)
        );
        let signal = Arc::new(AcquireSignal::default());
        stage.set_acquire("a-to-b", Arc::clone(&signal));
        for _ in 0..3 {
            let mut b = packet();
            assert_eq!(
                stage.handle_outbound(&mut b, Timestamp::ZERO),
                Disposition::Drop(DropReason::AcquirePending)
            );
        }
        assert_eq!(stage.counters().drops(DropReason::AcquirePending), 3);
        assert_eq!(stage.counters().drops(DropReason::NoSa), 1);
        // Taken once, however many packets asked.
        assert!(signal.take());
        assert!(!signal.take());
        // A policy reload keeps the signal.
        set.reload(&mut stage, Timestamp::ZERO).unwrap();
        let mut b = packet();
        assert_eq!(
            stage.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Drop(DropReason::AcquirePending)
        );
        assert!(signal.take());
    }
}
