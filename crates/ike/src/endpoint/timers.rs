//! Timers: retransmissions and give-ups (RFC 7296 2.1, 2.4), half-open
//! expiry, IKE SA and CHILD_SA rekeys when due, liveness checks (2.4).

use super::*;

impl Endpoint {
    /// Retransmissions, give-ups, half-open expiry and liveness checks due
    /// at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<u64> = self
            .sas
            .values()
            .filter(|sa| self.deadline(sa).is_some_and(|d| d <= now))
            .map(|sa| sa.id)
            .collect();
        for id in due {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            match self.timeout_sa(now, &mut sa) {
                Ok(After::Keep) => {
                    self.sas.insert(id, sa);
                }
                Ok(After::Remove) => self.forget(&sa),
                Err(e) => {
                    self.local_failure(e);
                    self.sas.insert(id, sa);
                }
            }
        }
    }

    /// The CHILD_SA due for rekeying first.
    pub(super) fn next_rekey(sa: &IkeSa) -> Option<&ChildSa> {
        sa.children
            .iter()
            .filter(|c| !c.deleting)
            .min_by_key(|c| c.rekey_at)
    }

    pub(super) fn timeout_sa(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<After, IkeError> {
        if sa.state == State::HalfOpen
            && now >= sa.created.saturating_add(self.config.half_open_timeout)
        {
            self.out.counters.half_open_expired += 1;
            return Ok(After::Remove);
        }
        if sa.expire_at.is_some_and(|t| t <= now) {
            return Ok(self.fail(sa, DownReason::DeletedLocally));
        }
        if self.keepalive_due(sa).is_some_and(|t| t <= now) {
            sa.keepalive_sent = now;
            self.out.counters.nat_keepalives_sent += 1;
            self.out.send(sa, NAT_KEEPALIVE.to_vec());
        }
        let retransmit = self.config.peer.retransmit;
        if let Some(p) = &mut sa.pending {
            if now >= p.next_at {
                if p.retransmits >= retransmit.tries {
                    return Ok(self.fail(sa, DownReason::Timeout));
                }
                p.retransmits += 1;
                p.interval = (p.interval * 2).min(retransmit.max_interval);
                p.next_at = now.saturating_add(p.interval);
                let bytes = p.bytes.clone();
                self.out.counters.retransmissions += 1;
                self.out.send(sa, bytes);
            }
            return Ok(After::Keep);
        }
        if sa.state != State::Established || !sa.announced {
            return Ok(After::Keep);
        }
        if sa.rekey_at <= now {
            self.rekey_ike_of(now, sa)?;
            return Ok(After::Keep);
        }
        if let Some(c) = Self::next_rekey(sa).filter(|c| c.rekey_at <= now) {
            let old = c.inbound_spi;
            self.rekey_child_of(now, sa, old)?;
            return Ok(After::Keep);
        }
        if let Some(iv) = self.config.peer.liveness {
            if now >= sa.last_heard.saturating_add(iv) {
                self.request(
                    now,
                    sa,
                    ExchangeType::Informational,
                    Vec::new(),
                    RequestKind::Liveness,
                )?;
            }
        }
        Ok(After::Keep)
    }
}
