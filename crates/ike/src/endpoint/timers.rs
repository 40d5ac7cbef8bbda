//! Timers: retransmissions and give-ups (RFC 7296 2.1, 2.4), half-open
//! expiry, IKE SA and CHILD_SA rekeys when due and hard lifetimes,
//! liveness checks (2.4).

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
        if sa.state == State::Established && sa.announced {
            if sa.hard_at <= now {
                return self.expire_ike(now, sa);
            }
            self.expire_children(now, sa)?;
        }
        if self.keepalive_due(sa).is_some_and(|t| t <= now) {
            sa.keepalive_sent = now;
            self.out.counters.nat_keepalives_sent += 1;
            self.out.send(sa, NAT_KEEPALIVE.to_vec());
        }
        let retransmit = self.peer(sa).retransmit;
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
        if sa.missing_children.iter().any(|(_, t)| *t <= now) {
            self.request_missing_child(now, sa)?;
            return Ok(After::Keep);
        }
        if let Some(iv) = self.peer(sa).liveness {
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

    /// The IKE SA reached its hard lifetime: its CHILD_SAs and then the IKE
    /// SA are reported gone at once (their SAs leave the stage now), and a
    /// Delete tells the peer (RFC 7296 1.4.1); the record stays, not
    /// announced, until that is answered or given up.
    fn expire_ike(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<After, IkeError> {
        self.out.counters.ike_sas_expired += 1;
        let name = self.peer(sa).name.clone();
        self.out.close(sa, &name, DownReason::Expired);
        sa.announced = false;
        sa.state = State::Deleting;
        self.request_ike_delete(now, sa)?;
        Ok(After::Keep)
    }

    /// CHILD_SAs past their hard lifetime are reported gone at once and
    /// deleted with the peer (unless our Delete is out already).
    fn expire_children(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        while let Some(i) = sa.children.iter().position(|c| c.hard_at <= now) {
            let c = sa.children.remove(i);
            self.out.counters.child_sas_expired += 1;
            self.out.child_deleted(sa.id, &self.peers[sa.peer].name, &c);
            if !c.deleting {
                self.request_child_delete(now, sa, c.inbound_spi)?;
            }
        }
        Ok(())
    }
}
