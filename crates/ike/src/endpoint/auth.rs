//! IKE_AUTH with a pre-shared key (RFC 7296 1.2, 2.15) and the first
//! CHILD_SA, on both sides; INITIAL_CONTACT (2.4).

use super::*;

impl Endpoint {
    pub(super) fn verify_auth(
        &self,
        sa: &IkeSa,
        id: &IdPayload,
        auth: &AuthPayload,
        from_initiator: bool,
    ) -> bool {
        let Some(keys) = &sa.keys else {
            return false;
        };
        let (message, nonce, sk_p) = if from_initiator {
            (&sa.init_request, &sa.nr, &keys.sk_pi)
        } else {
            (&sa.init_response, &sa.ni, &keys.sk_pr)
        };
        let expect = psk_auth(&self.config.peer.psk, message, nonce, sk_p, &id.body());
        self.config.peer.remote_id.matches(id)
            && auth.method == AUTH_PSK
            && ct_eq(&auth.data, expect.expose())
    }

    pub(super) fn ike_sa_up(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        sa.state = State::Established;
        sa.rekey_at = self.rekey_time(now, self.config.peer.lifetimes.ike)?;
        sa.hard_at = now.saturating_add(Lifetimes::hard(self.config.peer.lifetimes.ike));
        sa.announced = true;
        if let Some(suite) = sa.suite {
            self.out.events.push_back(Event::IkeSaUp {
                ike: IkeSaId(sa.id),
                initiator: sa.initiator,
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
                suite,
                nat_local: sa.nat_local,
                nat_remote: sa.nat_remote,
            });
        }
        Ok(())
    }

    /// The responder's IKE_AUTH answer (initiator side).
    pub(super) fn on_auth_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let idr = found.idr;
        let auth = found.auth;
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = match first_error(payloads) {
                Some(t) => DownReason::PeerNotify(t),
                None => DownReason::InvalidReply,
            };
            return Ok(self.fail(sa, reason));
        };
        if !self.verify_auth(sa, idr, auth, false) {
            return Ok(self.fail(sa, DownReason::AuthenticationFailed));
        }
        self.ike_sa_up(now, sa)?;
        let inbound_spi = sa.first_child_spi;
        sa.first_child_spi = 0;
        if found.sa.is_none() && first_error(payloads).is_none_or(|t| !is_child_error(t)) {
            // No CHILD_SA was created.
            return Ok(After::Keep);
        }
        let peer = &self.config.peer;
        let asked = Asked {
            inbound_spi,
            mode: peer.mode,
            local_ts: &peer.local_ts,
            remote_ts: &peer.remote_ts,
            ni: sa.ni.clone(),
            rekeys: None,
            pfs: Pfs::Ignore,
            dh: None,
        };
        let child = self.accept_child_reply(payloads, asked, Some(sa.nr.clone()));
        self.child_outcome(now, sa, inbound_spi, child)?;
        Ok(After::Keep)
    }

    /// The initiator's IKE_AUTH (responder side, RFC 7296 1.2, 2.15).
    pub(super) fn on_auth_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let idi = found.idi;
        let auth = found.auth;
        let (Some(idi), Some(auth)) = (idi, auth) else {
            let n = [notify(NotifyType::InvalidSyntax, Vec::new())];
            self.respond(sa, h.exchange, h.message_id, &n)?;
            self.refuse_ike_sa(now, sa);
            return Ok(After::Keep);
        };
        if !self.verify_auth(sa, idi, auth, true) {
            // RFC 7296 2.21.2: AUTHENTICATION_FAILED in the IKE_AUTH
            // response, and no IKE SA.
            let n = [notify(NotifyType::AuthenticationFailed, Vec::new())];
            self.respond(sa, h.exchange, h.message_id, &n)?;
            self.refuse_ike_sa(now, sa);
            return Ok(After::Keep);
        }
        let peer = &self.config.peer;
        let idr = peer.local_id.to_payload();
        let Some(keys) = &sa.keys else {
            return Ok(After::Remove);
        };
        let our_auth = psk_auth(
            &peer.psk,
            &sa.init_response,
            &sa.ni,
            &keys.sk_pr,
            &idr.body(),
        );
        let mut out = vec![
            Payload::IdR(idr),
            Payload::Auth(AuthPayload {
                method: AUTH_PSK,
                data: our_auth.expose().to_vec(),
            }),
        ];
        let nonces = (sa.ni.clone(), sa.nr.clone());
        let child = self.negotiate_child(sa, payloads, nonces, None, Pfs::Ignore)?;
        match &child {
            Some(Ok(c)) => out.extend(c.reply.iter().cloned()),
            Some(Err((t, data))) => out.push(notify(*t, data.clone())),
            None => {}
        }
        self.respond(sa, h.exchange, h.message_id, &out)?;
        self.ike_sa_up(now, sa)?;
        match child {
            Some(Ok(c)) => self.child_up(now, sa, c.child)?,
            Some(Err((notify, _))) => self.out.events.push_back(Event::ChildSaFailed {
                ike: IkeSaId(sa.id),
                name: self.config.peer.name.clone(),
                notify,
            }),
            None => {}
        }
        if find_notify(payloads, NotifyType::InitialContact).is_some() {
            self.initial_contact(sa.id);
        }
        Ok(After::Keep)
    }

    /// RFC 7296 2.4: INITIAL_CONTACT means the peer has no other IKE SA
    /// with us; ours with the same peer identity are gone without a
    /// Delete. This endpoint has one peer configuration, so that is every
    /// other established IKE SA.
    pub(super) fn initial_contact(&mut self, keep: u64) {
        let stale: Vec<u64> = self
            .sas
            .iter()
            .filter(|(id, sa)| **id != keep && sa.state == State::Established)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(mut sa) = self.sas.remove(&id) {
                self.out
                    .close(&mut sa, &self.config.peer.name, DownReason::InitialContact);
                self.forget(&sa);
            }
        }
    }
}
