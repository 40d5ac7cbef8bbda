//! IKE_AUTH with a pre-shared key (RFC 7296 1.2, 2.15) or digital
//! signatures with certificates (RFC 7427) and the first CHILD_SA, on both
//! sides; INITIAL_CONTACT (2.4).

use super::*;

impl Endpoint {
    /// Checks the peer's ID and AUTH (RFC 7296 2.15): with a pre-shared
    /// key the MAC, with certificates (RFC 7427) the chain to our CAs at
    /// the wall-clock time, the identity in the certificate and the
    /// signature. A refusal is counted by its reason.
    pub(super) fn verify_auth(
        &mut self,
        sa: &IkeSa,
        id: &IdPayload,
        auth: &AuthPayload,
        payloads: &[Payload],
    ) -> bool {
        let r = self.check_auth(sa, id, auth, payloads);
        if let Err(why) = r {
            *self.out.counters.auth_refused.entry(why).or_default() += 1;
        }
        r.is_ok()
    }

    fn check_auth(
        &self,
        sa: &IkeSa,
        id: &IdPayload,
        auth: &AuthPayload,
        payloads: &[Payload],
    ) -> Result<(), AuthFailure> {
        // The keys exist from IKE_SA_INIT on; without them no AUTH of any
        // method could verify.
        let keys = sa.keys.as_ref().ok_or(AuthFailure::WrongMethod)?;
        // The peer signs its own IKE_SA_INIT message and our nonce.
        let (message, nonce, sk_p) = if sa.initiator {
            (&sa.init_response, &sa.ni, &keys.sk_pr)
        } else {
            (&sa.init_request, &sa.nr, &keys.sk_pi)
        };
        if !self.peer(sa).remote_id.matches(id) {
            return Err(AuthFailure::IdentityMismatch);
        }
        match &self.peer(sa).auth {
            Authentication::Psk(psk) => {
                if auth.method != AUTH_PSK {
                    return Err(AuthFailure::WrongMethod);
                }
                let expect = psk_auth(psk, message, nonce, sk_p, &id.body());
                if ct_eq(&auth.data, expect.expose()) {
                    Ok(())
                } else {
                    Err(AuthFailure::PskMismatch)
                }
            }
            Authentication::Certificate(creds) => {
                // RFC 7296 3.6: the first certificate holds the key that
                // verifies AUTH; any others may help build the path.
                let chain: Vec<&[u8]> = payloads
                    .iter()
                    .filter_map(|p| match p {
                        Payload::Cert(c) if c.encoding == CERT_X509_SIGNATURE => {
                            Some(c.data.as_slice())
                        }
                        _ => None,
                    })
                    .collect();
                let signed = signed_octets(message, nonce, sk_p, &id.body());
                creds.verify_peer(
                    &chain,
                    id,
                    self.wall_clock,
                    auth.method,
                    &auth.data,
                    &signed,
                )
            }
        }
    }

    /// Our ID's companions in IKE_AUTH (RFC 7296 1.2, 2.15): with a
    /// pre-shared key the AUTH payload; with certificates our CERT (and
    /// one for each intermediate CA), (initiator) a CERTREQ naming our CAs
    /// (3.7), and the signature AUTH (RFC 7427 3, or RFC 4754 for a peer
    /// without RFC 7427).
    pub(super) fn our_auth(&self, sa: &IkeSa, id: &IdPayload) -> Result<Vec<Payload>, IkeError> {
        let keys = sa
            .keys
            .as_ref()
            .ok_or(IkeError::NotEstablished(IkeSaId(sa.id)))?;
        let (message, nonce, sk_p) = if sa.initiator {
            (&sa.init_request, &sa.nr, &keys.sk_pi)
        } else {
            (&sa.init_response, &sa.ni, &keys.sk_pr)
        };
        Ok(match &self.peer(sa).auth {
            Authentication::Psk(psk) => {
                let mac = psk_auth(psk, message, nonce, sk_p, &id.body());
                vec![Payload::Auth(AuthPayload {
                    method: AUTH_PSK,
                    data: mac.expose().to_vec(),
                })]
            }
            Authentication::Certificate(creds) => {
                let signed = signed_octets(message, nonce, sk_p, &id.body());
                // A peer that announced no RFC 7427 hashes may know only
                // the classic methods: RFC 4754 for a P-256 key (Ed25519
                // has only method 14).
                let legacy = (!sa.peer_rfc7427)
                    .then(|| creds.key().sign_rfc4754(&signed, &self.rng))
                    .flatten();
                let auth = match legacy {
                    Some(signature) => AuthPayload {
                        method: AUTH_ECDSA_P256,
                        data: signature?,
                    },
                    None => {
                        let (algorithm, signature) = creds.key().sign(&signed, &self.rng)?;
                        AuthPayload {
                            method: AUTH_DIGITAL_SIGNATURE,
                            data: signature_auth_data(algorithm, &signature),
                        }
                    }
                };
                let chain = core::iter::once(creds.certificate()).chain(creds.intermediates());
                let mut out: Vec<Payload> = chain
                    .map(|c| {
                        Payload::Cert(CertPayload {
                            encoding: CERT_X509_SIGNATURE,
                            data: c.to_vec(),
                        })
                    })
                    .collect();
                if sa.initiator {
                    out.push(Payload::CertReq(CertPayload {
                        encoding: CERT_X509_SIGNATURE,
                        data: creds.certreq_authorities(),
                    }));
                }
                out.push(Payload::Auth(auth));
                out
            }
        })
    }

    /// What IKE_SA_INIT adds with certificates: SIGNATURE_HASH_ALGORITHMS
    /// (RFC 7427 4) and, from the responder, a CERTREQ naming our CAs (RFC
    /// 7296 1.2, 3.7). The initiator speaks for its IKE SA's peer; the
    /// responder, whose peer is known only at IKE_AUTH, for every peer of
    /// the endpoint that uses certificates (their CAs' hashes, each once).
    pub(super) fn init_extras(&self, initiator: Option<&IkeSa>) -> Vec<Payload> {
        let responder = initiator.is_none();
        let peers = match initiator {
            Some(sa) => core::slice::from_ref(self.peer(sa)),
            None => &self.peers[..],
        };
        let mut authorities: Vec<u8> = Vec::new();
        let mut certificates = false;
        for p in peers {
            if let Authentication::Certificate(creds) = &p.auth {
                certificates = true;
                for hash in creds.certreq_authorities().chunks(20) {
                    if !authorities.chunks(20).any(|h| h == hash) {
                        authorities.extend_from_slice(hash);
                    }
                }
            }
        }
        if !certificates {
            return Vec::new();
        }
        let hashes = SUPPORTED_HASHES
            .iter()
            .flat_map(|h| h.to_be_bytes())
            .collect();
        let mut out = Vec::new();
        if responder {
            out.push(Payload::CertReq(CertPayload {
                encoding: CERT_X509_SIGNATURE,
                data: authorities,
            }));
        }
        out.push(notify(NotifyType::SignatureHashAlgorithms, hashes));
        out
    }

    pub(super) fn ike_sa_up(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        sa.state = State::Established;
        let lifetimes = self.peer(sa).lifetimes;
        sa.rekey_at = self.rekey_time(now, lifetimes.ike, lifetimes.jitter)?;
        sa.hard_at = now.saturating_add(Lifetimes::hard(lifetimes.ike));
        sa.announced = true;
        if let Some(suite) = sa.suite {
            let peer = self.peer(sa);
            self.out.events.push_back(Event::IkeSaUp {
                ike: IkeSaId(sa.id),
                peer: peer.name.clone(),
                remote_id: peer.remote_id.clone(),
                local: sa.local,
                remote: sa.remote,
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
        if !self.verify_auth(sa, idr, auth, payloads) {
            // RFC 7296 2.21.2: the initiator may say so in a separate
            // INFORMATIONAL; sent once, since the IKE SA is gone.
            let n = [notify(NotifyType::AuthenticationFailed, Vec::new())];
            let id = sa.next_message_id;
            let bytes = self.build(sa, ExchangeType::Informational, false, id, &n)?;
            self.out
                .counters
                .requests_sent
                .bump(ExchangeType::Informational);
            self.out.send(sa, bytes);
            return Ok(self.fail(sa, DownReason::AuthenticationFailed));
        }
        self.ike_sa_up(now, sa)?;
        let inbound_spi = sa.first_child_spi;
        sa.first_child_spi = 0;
        // The other children follow, one CREATE_CHILD_SA at a time (RFC
        // 7296 1.3.1), as soon as this exchange is done.
        let (first, others) = match self.peer(sa).children.split_first() {
            Some((first, others)) => (first.clone(), others),
            None => return Err(IkeError::UnknownChild(String::new())),
        };
        sa.missing_children = others.iter().map(|c| (c.name.clone(), now)).collect();
        if found.sa.is_none() && first_error(payloads).is_none_or(|t| !is_child_error(t)) {
            // No CHILD_SA was created: ask for it again.
            sa.missing_children.push((first.name, now));
            return Ok(After::Keep);
        }
        let asked = Asked {
            child: first.name.clone(),
            inbound_spi,
            mode: first.mode,
            local_ts: &first.local_ts,
            remote_ts: &first.remote_ts,
            ni: sa.ni.clone(),
            rekeys: None,
            pfs: Pfs::Ignore,
            dh: None,
        };
        let child = self.accept_child_reply(sa, payloads, asked, Some(sa.nr.clone()));
        self.child_outcome(now, sa, (inbound_spi, &first.name, true), child)?;
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
        // The peer configuration is the one whose identities IDi (and IDr,
        // when sent) name (RFC 7296 2.15, 3.5); its key or certificates
        // verify AUTH. An identity no peer has is refused like a wrong AUTH.
        let authentic = match self.peer_for(idi, found.idr) {
            Some(peer) => {
                sa.peer = peer;
                self.verify_auth(sa, idi, auth, payloads)
            }
            None => {
                let why = AuthFailure::IdentityMismatch;
                *self.out.counters.auth_refused.entry(why).or_default() += 1;
                false
            }
        };
        if !authentic {
            // RFC 7296 2.21.2: AUTHENTICATION_FAILED in the IKE_AUTH
            // response, and no IKE SA.
            let n = [notify(NotifyType::AuthenticationFailed, Vec::new())];
            self.respond(sa, h.exchange, h.message_id, &n)?;
            self.refuse_ike_sa(now, sa);
            return Ok(After::Keep);
        }
        let idr = self.peer(sa).local_id.to_payload();
        let mut out = self.our_auth(sa, &idr)?;
        out.insert(0, Payload::IdR(idr));
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
                name: self.peer(sa).name.clone(),
                child: String::new(),
                notify,
            }),
            None => {}
        }
        if find_notify(payloads, NotifyType::InitialContact).is_some() {
            self.initial_contact(sa.id, sa.peer);
        }
        Ok(After::Keep)
    }

    /// RFC 7296 2.4: INITIAL_CONTACT means the peer has no other IKE SA
    /// with us; ours with the same peer identity are gone without a
    /// Delete: every other established IKE SA of the same peer
    /// configuration (its identities are that peer's).
    pub(super) fn initial_contact(&mut self, keep: u64, peer: usize) {
        let stale: Vec<u64> = self
            .sas
            .iter()
            .filter(|(id, sa)| **id != keep && sa.state == State::Established && sa.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(mut sa) = self.sas.remove(&id) {
                let name = &self.peers[sa.peer].name;
                self.out.close(&mut sa, name, DownReason::InitialContact);
                self.forget(&sa);
            }
        }
    }
}
