//! Rekeying the IKE SA (RFC 7296 1.3.2, 2.18).

use super::*;

impl Endpoint {
    /// Rekeys IKE SA `id` (RFC 7296 1.3.2, 2.18): the new IKE SA takes over
    /// the CHILD_SAs and is reported with [`Event::IkeSaRekeyed`]; the old
    /// one is deleted.
    pub fn rekey_ike(&mut self, now: Timestamp, id: IkeSaId) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.rekey_ike_of(now, sa))
    }

    pub(super) fn rekey_ike_of(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        let suite = match (sa.state, sa.suite) {
            (State::Established, Some(s)) => s,
            _ => return Err(IkeError::NotEstablished(IkeSaId(sa.id))),
        };
        sa.rekey_at = Timestamp(u64::MAX);
        let spi = self.new_ike_spi()?;
        let ni = self.nonce()?;
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let ke = KePayload {
            group: suite.group.number(),
            data: dh.public_value().to_vec(),
        };
        sa.pending_dh.push((ni.clone(), dh));
        let proposals = self.ike_offer(sa, spi.to_be_bytes().to_vec());
        let out = vec![
            Payload::Sa(proposals),
            Payload::Nonce(ni.clone()),
            Payload::Ke(ke),
        ];
        self.request(
            now,
            sa,
            ExchangeType::CreateChildSa,
            out,
            RequestKind::RekeyIke { spi, ni },
        )
    }

    /// The IKE SA a rekey of `old` made, in the table but not yet in use:
    /// message IDs start again at zero, and the rekey's initiator is its
    /// original initiator (RFC 7296 2.18). Until [`Self::adopt`] it has no
    /// CHILD_SAs and ends at `expire_at` unless deleted first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_rekeyed_sa(
        &mut self,
        now: Timestamp,
        old: &mut IkeSa,
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        suite: IkeSuite,
        keys: IkeKeys,
        (ni, nr): (Vec<u8>, Vec<u8>),
    ) -> Result<u64, IkeError> {
        let id = if initiator { spi_i } else { spi_r };
        let (out, inn) = if initiator {
            (
                SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai),
                SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar),
            )
        } else {
            (
                SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar),
                SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai),
            )
        };
        let mut sa = IkeSa::new(
            initiator,
            (spi_i, spi_r),
            (old.local, old.remote),
            State::Established,
            suite.group,
            now,
        );
        sa.suite = Some(suite);
        sa.ni = ni;
        sa.nr = nr;
        sa.keys = Some(keys);
        sa.sk_out = Some(out);
        sa.sk_in = Some(inn);
        sa.nat_local = old.nat_local;
        sa.nat_remote = old.nat_remote;
        sa.peer = old.peer;
        sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
        self.sas.insert(id, sa);
        Ok(id)
    }

    /// Makes IKE SA `new` (from [`Self::new_rekeyed_sa`]) replace `old`:
    /// the CHILD_SAs move to it and the owner is told; `old` ends quietly
    /// once deleted (or at its `expire_at`).
    pub(super) fn adopt(
        &mut self,
        now: Timestamp,
        old: &mut IkeSa,
        new: u64,
    ) -> Result<(), IkeError> {
        let lifetimes = self.peer(old).lifetimes;
        let rekey_at = self.rekey_time(now, lifetimes.ike, lifetimes.jitter)?;
        let Some(sa) = self.sas.get_mut(&new) else {
            return Err(IkeError::UnknownIkeSa(IkeSaId(new)));
        };
        sa.children = std::mem::take(&mut old.children);
        sa.missing_children = std::mem::take(&mut old.missing_children);
        sa.announced = true;
        sa.expire_at = None;
        sa.rekey_at = rekey_at;
        sa.hard_at = now.saturating_add(Lifetimes::hard(lifetimes.ike));
        self.out.events.push_back(Event::IkeSaRekeyed {
            old: IkeSaId(old.id),
            new: IkeSaId(new),
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
        });
        old.announced = false;
        old.state = State::Deleting;
        old.collision = None;
        Ok(())
    }

    /// Sends a Delete of IKE SA `id` itself, which must be in the table.
    fn delete_ike_sa_in_table(&mut self, now: Timestamp, id: u64) -> Result<(), IkeError> {
        let Some(mut sa) = self.sas.remove(&id) else {
            return Ok(());
        };
        sa.state = State::Deleting;
        let r = self.request_ike_delete(now, &mut sa);
        self.sas.insert(id, sa);
        r
    }

    pub(super) fn request_ike_delete(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
    ) -> Result<(), IkeError> {
        let del = Payload::Delete(DeletePayload {
            protocol_id: PROTO_IKE,
            spi_size: 0,
            spis: Vec::new(),
        });
        self.request(
            now,
            sa,
            ExchangeType::Informational,
            vec![del],
            RequestKind::DeleteIke,
        )
    }

    /// The peer's request to rekey the IKE SA (responder, RFC 7296 1.3.2).
    pub(super) fn on_ike_rekey_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let reply = |this: &mut Endpoint, sa: &mut IkeSa, t: NotifyType, data: Vec<u8>| {
            this.respond(sa, h.exchange, h.message_id, &[notify(t, data)])
                .map(|()| After::Keep)
        };
        let kind = sa.pending.as_ref().map(|p| &p.kind);
        let ours_rekeying = matches!(kind, Some(RequestKind::RekeyIke { .. }));
        let ours_deleting = matches!(kind, Some(RequestKind::DeleteIke));
        if ours_deleting || sa.state != State::Established || sa.collision.is_some() {
            // RFC 7296 2.25: the IKE SA is going away (or already rekeyed).
            return reply(self, sa, NotifyType::TemporaryFailure, Vec::new());
        }
        let found = Found::of(payloads);
        let (Some(offer), Some(ni), Some(ke), Some(keys)) =
            (found.sa, found.nonce, found.ke, &sa.keys)
        else {
            return reply(self, sa, NotifyType::InvalidSyntax, Vec::new());
        };
        let proposals = &self.peer(sa).ike_proposals;
        let Some((number, peer_spi, suite)) =
            select_ike_with_spi(offer, proposals, Some(ke.group), 8)
        else {
            return reply(self, sa, NotifyType::NoProposalChosen, Vec::new());
        };
        if suite.group.number() != ke.group {
            let group = suite.group.number().to_be_bytes().to_vec();
            return reply(self, sa, NotifyType::InvalidKePayload, group);
        }
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let public = dh.public_value().to_vec();
        let Ok(shared) = dh.agree(&ke.data) else {
            return reply(self, sa, NotifyType::InvalidSyntax, Vec::new());
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(&peer_spi);
        let spi_i = u64::from_be_bytes(b);
        let spi_r = self.new_ike_spi()?;
        let nr = self.nonce()?;
        let ni = ni.clone();
        let keys = derive_rekeyed_ike_keys(&suite, &keys.sk_d, &ni, &nr, &shared, spi_i, spi_r)?;
        let out = [
            Payload::Sa(SaPayload {
                proposals: vec![ike_reply(number, spi_r.to_be_bytes().to_vec(), &suite)],
            }),
            Payload::Nonce(nr.clone()),
            Payload::Ke(KePayload {
                group: suite.group.number(),
                data: public,
            }),
        ];
        self.respond(sa, h.exchange, h.message_id, &out)?;
        let new = self.new_rekeyed_sa(
            now,
            sa,
            false,
            (spi_i, spi_r),
            suite,
            keys,
            (ni.clone(), nr.clone()),
        )?;
        if ours_rekeying {
            // Both rekey at once (RFC 7296 2.8.2): which of the two new IKE
            // SAs stays is decided when our own answer arrives.
            sa.collision = Some((new, ni, nr));
            return Ok(After::Keep);
        }
        self.adopt(now, sa, new)?;
        // The rekey's initiator deletes the old IKE SA.
        sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
        Ok(After::Keep)
    }

    /// The answer to our IKE SA rekey: the new IKE SA takes over and the
    /// old one is deleted; a refusal leaves the old one and retries later.
    pub(super) fn on_ike_rekey_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
        spi_i: u64,
        ni: Vec<u8>,
    ) -> Result<After, IkeError> {
        let dh = Self::take_dh(sa, &ni);
        let found = Found::of(payloads);
        let accepted = match (first_error(payloads), found.sa, found.nonce, found.ke, dh) {
            (None, Some(offer), Some(nr), Some(ke), Some(dh)) => {
                accept_ike_reply_with_spi(offer, &self.peer(sa).ike_proposals, 8)
                    .filter(|(_, s)| s.group == dh.group() && ke.group == s.group.number())
                    .and_then(|(spi, s)| {
                        let shared = dh.agree(&ke.data).ok()?;
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&spi);
                        Some((u64::from_be_bytes(b), s, shared, nr.clone()))
                    })
            }
            _ => None,
        };
        let (Some((spi_r, suite, shared, nr)), Some(keys)) = (accepted, &sa.keys) else {
            if let Some((theirs, _, _)) = sa.collision.take() {
                // Ours failed, the peer's stands; it deletes the old one.
                self.adopt(now, sa, theirs)?;
                sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
            } else {
                sa.rekey_at = now.saturating_add(self.retry_delay()?);
            }
            return Ok(After::Keep);
        };
        let keys = derive_rekeyed_ike_keys(&suite, &keys.sk_d, &ni, &nr, &shared, spi_i, spi_r)?;
        let ours = self.new_rekeyed_sa(
            now,
            sa,
            true,
            (spi_i, spi_r),
            suite,
            keys,
            (ni.clone(), nr.clone()),
        )?;
        if let Some((theirs, pni, pnr)) = sa.collision.take() {
            // RFC 7296 2.8.2: the new IKE SA made with the lowest of the
            // four nonces is deleted by its initiator, and the initiator
            // of the other one deletes the old IKE SA.
            if ni.clone().min(nr) < pni.min(pnr) {
                self.adopt(now, sa, theirs)?;
                sa.expire_at = Some(now.saturating_add(self.config.half_open_timeout));
                self.delete_ike_sa_in_table(now, ours)?;
                return Ok(After::Keep);
            }
            // Theirs is redundant: the peer deletes it (or it expires).
        }
        self.adopt(now, sa, ours)?;
        self.request_ike_delete(now, sa)?;
        Ok(After::Keep)
    }
}
