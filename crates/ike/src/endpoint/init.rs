//! IKE_SA_INIT (RFC 7296 1.2): our request and its answers (COOKIE 2.6,
//! INVALID_KE_PAYLOAD 1.2, NAT detection 2.23), and the responder's side.

use super::*;

impl Endpoint {
    /// (Re)sends our IKE_SA_INIT request: [N(COOKIE),] SA, KE, Ni,
    /// N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP).
    pub(super) fn send_init(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        let mut payloads = Vec::new();
        if let Some(c) = &sa.cookie {
            payloads.push(notify(NotifyType::Cookie, c.clone()));
        }
        let proposals = self.ike_offer(sa, Vec::new());
        let ke = sa
            .dh
            .as_ref()
            .map(|d| d.public_value().to_vec())
            .unwrap_or_default();
        payloads.push(Payload::Sa(proposals));
        payloads.push(Payload::Ke(KePayload {
            group: sa.group.number(),
            data: ke,
        }));
        payloads.push(Payload::Nonce(sa.ni.clone()));
        payloads.push(notify(
            NotifyType::NatDetectionSourceIp,
            nat_detection_hash(sa.spi_i, 0, sa.local).to_vec(),
        ));
        payloads.push(notify(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(sa.spi_i, 0, sa.remote).to_vec(),
        ));
        payloads.extend(self.init_extras(Some(&*sa)));
        sa.pending = None;
        sa.next_message_id = 0;
        self.request(
            now,
            sa,
            ExchangeType::IkeSaInit,
            payloads,
            RequestKind::Init,
        )?;
        sa.init_request = sa
            .pending
            .as_ref()
            .map(|p| p.bytes.clone())
            .unwrap_or_default();
        Ok(())
    }

    /// Checks the peer's NAT_DETECTION_* notifications (RFC 7296 2.23):
    /// its source hash against the address it came from, its destination
    /// hash against ours.
    pub(super) fn detect_nat(sa: &mut IkeSa, payloads: &[Payload], spi_r: u64) {
        let mut source_seen = false;
        let mut source_match = false;
        for p in payloads {
            if let Payload::Notify(n) = p {
                match n.notify_type {
                    NotifyType::NatDetectionSourceIp => {
                        source_seen = true;
                        source_match |= n.data == nat_detection_hash(sa.spi_i, spi_r, sa.remote);
                    }
                    NotifyType::NatDetectionDestinationIp => {
                        sa.nat_local = n.data != nat_detection_hash(sa.spi_i, spi_r, sa.local);
                    }
                    _ => {}
                }
            }
        }
        sa.nat_remote = source_seen && !source_match;
    }

    /// The responder's IKE_SA_INIT answer (initiator side, RFC 7296 1.2).
    pub(super) fn on_init_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        if let Some(c) = find_notify(payloads, NotifyType::Cookie) {
            // RFC 7296 2.6: retry with the cookie first, all else unchanged.
            if sa.cookie_rounds >= MAX_COOKIE_ROUNDS || c.data.is_empty() || c.data.len() > 64 {
                return Ok(self.fail(sa, DownReason::InvalidReply));
            }
            sa.cookie_rounds += 1;
            sa.cookie = Some(c.data.clone());
            self.send_init(now, sa)?;
            return Ok(After::Keep);
        }
        if let Some(n) = find_notify(payloads, NotifyType::InvalidKePayload) {
            // RFC 7296 1.2: retry with the group the responder asked for,
            // if we offered it and have not used it yet.
            let asked = (n.data.len() == 2)
                .then(|| u16::from_be_bytes([n.data[0], n.data[1]]))
                .and_then(DhGroup::from_number);
            let offered = |g: DhGroup| {
                self.config
                    .peer
                    .ike_proposals
                    .iter()
                    .any(|p| p.groups.contains(&g))
            };
            return match asked {
                Some(g) if g != sa.group && offered(g) => {
                    sa.group = g;
                    sa.dh = Some(DhPrivate::generate(g, &self.rng)?);
                    self.send_init(now, sa)?;
                    Ok(After::Keep)
                }
                _ => Ok(self.fail(sa, DownReason::PeerNotify(NotifyType::InvalidKePayload))),
            };
        }
        if let Some(t) = first_error(payloads) {
            return Ok(self.fail(sa, DownReason::PeerNotify(t)));
        }
        let found = Found::of(payloads);
        let offer = found.sa;
        let ke = found.ke;
        let nonce = found.nonce;
        let (Some(offer), Some(ke), Some(nr)) = (offer, ke, nonce) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        let Some(suite) = accept_ike_reply(offer, &self.peer(sa).ike_proposals) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        if suite.group != sa.group || ke.group != sa.group.number() || h.spi_r == 0 {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        }
        let Some(dh) = sa.dh.take() else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        let Ok(shared) = dh.agree(&ke.data) else {
            return Ok(self.fail(sa, DownReason::InvalidReply));
        };
        sa.spi_r = h.spi_r;
        sa.nr = nr.clone();
        sa.init_response = bytes.to_vec();
        let keys = derive_ike_keys(&suite, &sa.ni, &sa.nr, &shared, sa.spi_i, sa.spi_r)?;
        sa.sk_out = Some(SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai));
        sa.sk_in = Some(SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar));
        sa.suite = Some(suite);
        sa.peer_rfc7427 = find_notify(payloads, NotifyType::SignatureHashAlgorithms).is_some();
        Self::detect_nat(sa, payloads, h.spi_r);
        if sa.nat_local || sa.nat_remote {
            // RFC 7296 2.23: behind a NAT, everything after IKE_SA_INIT
            // goes over UDP 4500 (with the non-ESP marker, RFC 3948 2.2,
            // which the caller adds for that port).
            for addr in [&mut sa.local, &mut sa.remote] {
                if addr.port() == IKE_PORT {
                    addr.set_port(NAT_T_PORT);
                }
            }
        }
        // IKE_AUTH: IDi, [CERT,] [CERTREQ,] AUTH, [N(INITIAL_CONTACT)],
        // [N(USE_TRANSPORT_MODE)], SA, TSi, TSr (RFC 7296 1.2).
        sa.keys = Some(keys);
        let idi = self.peer(sa).local_id.to_payload();
        let mut out = self.our_auth(sa, &idi)?;
        out.insert(0, Payload::IdI(idi));
        let spi = self.new_child_spi(sa)?;
        sa.first_child_spi = spi;
        let peer = self.peer(sa);
        if peer.initial_contact {
            out.push(notify(NotifyType::InitialContact, Vec::new()));
        }
        // The first child is created here (RFC 7296 1.2); validate() made
        // sure there is one.
        let first = peer
            .children
            .first()
            .ok_or_else(|| IkeError::UnknownChild(String::new()))?;
        if first.mode == Mode::Transport {
            out.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        let ts = [
            Payload::TsI(first.local_ts.clone()),
            Payload::TsR(first.remote_ts.clone()),
        ];
        out.push(Payload::Sa(self.esp_offer(sa, spi, false)));
        out.extend(ts);
        sa.state = State::AuthSent;
        self.request(now, sa, ExchangeType::IkeAuth, out, RequestKind::Auth)?;
        Ok(After::Keep)
    }

    /// An IKE_SA_INIT request (responder, RFC 7296 1.2). Nothing is kept
    /// for COOKIE, NO_PROPOSAL_CHOSEN and INVALID_KE_PAYLOAD answers.
    pub(super) fn responder_init(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
        local: SocketAddr,
        bytes: &[u8],
        msg: Message,
    ) -> Result<(), IkeError> {
        let h = msg.header;
        if let Some(id) = self.by_initiator.get(&(remote, h.spi_i)) {
            match self.sas.get(id) {
                Some(sa) if sa.init_request == bytes => {
                    let resp = sa.init_response.clone();
                    self.out.counters.responses_resent += 1;
                    self.out.transmits.push_back(Transmit {
                        remote,
                        local,
                        contents: resp,
                    });
                }
                _ => self.out.drop(DropReason::DuplicateInitiatorSpi),
            }
            return Ok(());
        }
        self.out
            .counters
            .requests_received
            .bump(ExchangeType::IkeSaInit);
        self.out.count_notifies_received(&msg.payloads);
        let reply = |this: &mut Endpoint, payload: Payload| {
            this.stateless_reply(&h, remote, local, payload)
        };
        let found = Found::of(&msg.payloads);
        let offer = found.sa;
        let ke = found.ke;
        let nonce = found.nonce;
        let (Some(offer), Some(ke), Some(ni)) = (offer, ke, nonce) else {
            return reply(self, notify(NotifyType::InvalidSyntax, Vec::new()));
        };
        let half_open = self.half_open_count();
        if half_open >= self.config.max_half_open {
            self.out.drop(DropReason::HalfOpenLimit);
            return Ok(());
        }
        if half_open >= self.config.cookie_threshold {
            // RFC 7296 2.6: the cookie must be the first payload.
            let expect = cookie(&self.cookie_secret, 0, ni, remote.ip(), h.spi_i);
            let got = match msg.payloads.first() {
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::Cookie => Some(&n.data),
                _ => None,
            };
            if !got.is_some_and(|g| ct_eq(g, &expect)) {
                return reply(self, notify(NotifyType::Cookie, expect));
            }
        }
        // Every peer accepts the same IKE proposals (`add_peer`): the
        // first peer's answer for whichever IKE_AUTH turns out to be.
        let Some((number, suite)) = select_ike(offer, &self.peers[0].ike_proposals, Some(ke.group))
        else {
            return reply(self, notify(NotifyType::NoProposalChosen, Vec::new()));
        };
        if suite.group.number() != ke.group {
            let group = suite.group.number().to_be_bytes().to_vec();
            return reply(self, notify(NotifyType::InvalidKePayload, group));
        }
        let dh = DhPrivate::generate(suite.group, &self.rng)?;
        let public = dh.public_value().to_vec();
        let Ok(shared) = dh.agree(&ke.data) else {
            return reply(self, notify(NotifyType::InvalidSyntax, Vec::new()));
        };
        let spi_r = self.new_ike_spi()?;
        let nr = self.nonce()?;
        let keys = derive_ike_keys(&suite, ni, &nr, &shared, h.spi_i, spi_r)?;
        let mut sa = IkeSa::new(
            false,
            (h.spi_i, spi_r),
            (local, remote),
            State::HalfOpen,
            suite.group,
            now,
        );
        sa.suite = Some(suite);
        sa.ni = ni.clone();
        sa.nr = nr.clone();
        sa.init_request = bytes.to_vec();
        sa.sk_out = Some(SkKeys::new(&suite, &keys.sk_er, &keys.sk_ar));
        sa.sk_in = Some(SkKeys::new(&suite, &keys.sk_ei, &keys.sk_ai));
        sa.keys = Some(keys);
        sa.peer_message_id = 1;
        sa.peer_rfc7427 = find_notify(&msg.payloads, NotifyType::SignatureHashAlgorithms).is_some();
        Self::detect_nat(&mut sa, &msg.payloads, 0);
        let mut out = vec![
            Payload::Sa(SaPayload {
                proposals: vec![ike_reply(number, Vec::new(), &suite)],
            }),
            Payload::Ke(KePayload {
                group: suite.group.number(),
                data: public,
            }),
            Payload::Nonce(nr),
            notify(
                NotifyType::NatDetectionSourceIp,
                nat_detection_hash(h.spi_i, spi_r, local).to_vec(),
            ),
            notify(
                NotifyType::NatDetectionDestinationIp,
                nat_detection_hash(h.spi_i, spi_r, remote).to_vec(),
            ),
        ];
        out.extend(self.init_extras(None));
        self.respond(&mut sa, ExchangeType::IkeSaInit, 0, &out)?;
        sa.init_response = sa
            .last_response
            .as_ref()
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        self.by_initiator.insert((remote, h.spi_i), spi_r);
        self.sas.insert(spi_r, sa);
        Ok(())
    }

    /// An IKE_SA_INIT answer that keeps no state: one notification.
    pub(super) fn stateless_reply(
        &mut self,
        h: &HeaderRepr,
        remote: SocketAddr,
        local: SocketAddr,
        payload: Payload,
    ) -> Result<(), IkeError> {
        let payloads = [payload];
        self.out.count_notifies_sent(&payloads);
        let header = HeaderRepr {
            spi_r: 0,
            flags: Flags::new(false, true),
            ..*h
        };
        let contents = Message {
            header,
            payloads: payloads.to_vec(),
        }
        .to_vec()?;
        self.out
            .counters
            .responses_sent
            .bump(ExchangeType::IkeSaInit);
        self.out.transmits.push_back(Transmit {
            remote,
            local,
            contents,
        });
        Ok(())
    }
}
