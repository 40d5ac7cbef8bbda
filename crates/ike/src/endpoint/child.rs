//! CHILD_SAs after IKE_AUTH: CREATE_CHILD_SA for new and rekeyed ones
//! (RFC 7296 1.3.1, 1.3.3, 2.8.1, PFS), their Delete and the INFORMATIONAL
//! exchange (1.4).

use super::*;

impl Endpoint {
    /// Deletes the CHILD_SA with our `inbound_spi` (RFC 7296 1.4.1); it is
    /// reported deleted when the peer answered (or the IKE SA ends).
    pub fn delete_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.delete_child_of(now, sa, inbound_spi))
    }

    pub(super) fn delete_child_of(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        let c = live_child(sa, inbound_spi)?;
        // Reported deleted when the peer confirms (RFC 7296 1.4.1), so the
        // inbound SA lives until then.
        c.deleting = true;
        self.request_child_delete(now, sa, inbound_spi)
    }

    /// An INFORMATIONAL request deleting our inbound CHILD_SA `spi` (the
    /// Delete payload names the SPIs its sender receives on, RFC 7296 3.11).
    pub(super) fn request_child_delete(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        let del = Payload::Delete(DeletePayload {
            protocol_id: PROTO_ESP,
            spi_size: 4,
            spis: vec![inbound_spi.to_be_bytes().to_vec()],
        });
        self.request(
            now,
            sa,
            ExchangeType::Informational,
            vec![del],
            RequestKind::DeleteChild(inbound_spi),
        )
    }

    /// Derives a CHILD_SA's keys, reports it and remembers it.
    pub(super) fn child_up(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        c: NewChild,
    ) -> Result<(), IkeError> {
        let Some(keys) = &sa.keys else {
            return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
        };
        let k = derive_child_keys(&keys.sk_d, &c.suite, c.shared.as_ref(), &c.ni, &c.nr)?;
        let (inbound, outbound) = if c.exchange_initiator {
            (k.responder_to_initiator, k.initiator_to_responder)
        } else {
            (k.initiator_to_responder, k.responder_to_initiator)
        };
        let lifetimes = self.peer(sa).lifetimes;
        sa.children.push(ChildSa {
            child: c.child.clone(),
            inbound_spi: c.inbound_spi,
            outbound_spi: c.outbound_spi,
            mode: c.mode,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            rekey_at: self.rekey_time(now, lifetimes.child, lifetimes.jitter)?,
            hard_at: now.saturating_add(Lifetimes::hard(lifetimes.child)),
            deleting: false,
            rekeyed_by_peer: None,
        });
        self.out
            .events
            .push_back(Event::ChildSaEstablished(Box::new(ChildSaEstablished {
                ike: IkeSaId(sa.id),
                name: self.peer(sa).name.clone(),
                child: c.child,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                mode: c.mode,
                local_ts: c.local_ts,
                remote_ts: c.remote_ts,
                suite: c.suite,
                inbound,
                outbound,
                local: sa.local,
                remote: sa.remote,
                udp_encapsulation: sa.nat_local || sa.nat_remote,
                exchange_initiator: c.exchange_initiator,
                rekeys: c.rekeys,
            })));
        Ok(())
    }

    /// Reads the responder's answer creating a CHILD_SA (we initiated the
    /// exchange): the new CHILD_SA, or the error to report and whether the
    /// responder may have installed one we must delete.
    pub(super) fn accept_child_reply(
        &self,
        sa: &IkeSa,
        payloads: &[Payload],
        asked: Asked<'_>,
        nr: Option<Vec<u8>>,
    ) -> Result<NewChild, (NotifyType, bool)> {
        if let Some(t) = first_error(payloads) {
            return Err((t, false));
        }
        let found = Found::of(payloads);
        let nr = nr.or_else(|| found.nonce.cloned());
        let (Some(offer), Some(tsi), Some(tsr), Some(nr)) = (found.sa, found.tsi, found.tsr, nr)
        else {
            return Err((NotifyType::InvalidSyntax, true));
        };
        let transport = find_notify(payloads, NotifyType::UseTransportMode).is_some();
        let Some((outbound_spi, suite)) =
            accept_esp_reply(offer, &self.peer(sa).esp_proposals, asked.pfs)
        else {
            return Err((NotifyType::NoProposalChosen, true));
        };
        // PFS: the responder's KE in the group of ours (RFC 7296 1.3.1).
        let shared = match (suite.group, asked.dh, found.ke) {
            (None, _, _) => None,
            (Some(g), Some(dh), Some(ke)) if dh.group() == g && ke.group == g.number() => {
                let Ok(secret) = dh.agree(&ke.data) else {
                    return Err((NotifyType::InvalidSyntax, true));
                };
                Some(secret)
            }
            _ => return Err((NotifyType::NoProposalChosen, true)),
        };
        // The mode we asked for, or a refusal (fail closed; RFC 7296
        // 1.3.1 lets the initiator delete a CHILD_SA in the wrong mode).
        if transport != (asked.mode == Mode::Transport) {
            return Err((NotifyType::NoProposalChosen, true));
        }
        if !within(tsi, asked.local_ts) || !within(tsr, asked.remote_ts) {
            return Err((NotifyType::TsUnacceptable, true));
        }
        Ok(NewChild {
            child: asked.child,
            inbound_spi: asked.inbound_spi,
            outbound_spi,
            suite,
            mode: asked.mode,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            ni: asked.ni,
            nr,
            shared,
            exchange_initiator: true,
            rekeys: asked.rekeys,
        })
    }

    /// Installs an accepted CHILD_SA, or reports the failure and deletes
    /// what the responder may have installed. A new CHILD_SA of child
    /// configuration `name` that failed (not a rekey, `retry`) is asked
    /// for again later rather than never.
    pub(super) fn child_outcome(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        (inbound_spi, name, retry): (u32, &str, bool),
        child: Result<NewChild, (NotifyType, bool)>,
    ) -> Result<(), IkeError> {
        match child {
            Ok(c) => self.child_up(now, sa, c),
            Err((notify, delete)) => {
                self.out.events.push_back(Event::ChildSaFailed {
                    ike: IkeSaId(sa.id),
                    name: self.peer(sa).name.clone(),
                    child: name.to_string(),
                    notify,
                });
                if retry {
                    let at = now.saturating_add(self.retry_delay()?);
                    sa.missing_children.push((name.to_string(), at));
                }
                if delete {
                    // The responder installed a CHILD_SA we cannot accept
                    // (fail closed): delete it (RFC 7296 1.4.1).
                    self.request_child_delete(now, sa, inbound_spi)?;
                }
                Ok(())
            }
        }
    }

    /// The responder's CHILD_SA negotiation: `None` when no CHILD_SA was
    /// asked for, `Some(Err)` with the error to return.
    pub(super) fn negotiate_child(
        &self,
        sa: &IkeSa,
        payloads: &[Payload],
        (ni, nr): (Vec<u8>, Vec<u8>),
        rekeys: Option<u32>,
        pfs: Pfs,
    ) -> Result<Option<Result<ChildReply, ChildRefusal>>, IkeError> {
        let found = Found::of(payloads);
        let offer = found.sa;
        let tsi = found.tsi;
        let tsr = found.tsr;
        let Some(offer) = offer else {
            return Ok(None);
        };
        let peer = self.peer(sa);
        let (Some(tsi), Some(tsr)) = (tsi, tsr) else {
            return Ok(Some(Err((NotifyType::TsUnacceptable, Vec::new()))));
        };
        let Some((number, outbound_spi, suite)) = select_esp(offer, &peer.esp_proposals, pfs)
        else {
            return Ok(Some(Err((NotifyType::NoProposalChosen, Vec::new()))));
        };
        let transport = find_notify(payloads, NotifyType::UseTransportMode).is_some();
        // A rekey keeps its CHILD_SA's configuration (RFC 7296 1.3.3).
        let rekeyed = rekeys.and_then(|old| sa.children.iter().find(|c| c.inbound_spi == old));
        let candidates = peer
            .children
            .iter()
            .filter(|c| rekeyed.is_none_or(|r| r.child == c.name));
        let fit = match fit_child(candidates, tsi, tsr, transport) {
            Ok(fit) => fit,
            Err(t) => return Ok(Some(Err((t, Vec::new())))),
        };
        let ChildFit {
            config,
            mode,
            local_ts,
            remote_ts,
        } = fit;
        // PFS (RFC 7296 1.3.1): a fresh Diffie-Hellman exchange in the
        // chosen group, which the peer's KE payload must use (1.3).
        let mut shared = None;
        let mut ke_reply = None;
        if let Some(g) = suite.group {
            let Some(ke) = found.ke.filter(|k| k.group == g.number()) else {
                let want = g.number().to_be_bytes().to_vec();
                return Ok(Some(Err((NotifyType::InvalidKePayload, want))));
            };
            let dh = DhPrivate::generate(g, &self.rng)?;
            ke_reply = Some(Payload::Ke(KePayload {
                group: g.number(),
                data: dh.public_value().to_vec(),
            }));
            let Ok(secret) = dh.agree(&ke.data) else {
                return Ok(Some(Err((NotifyType::InvalidSyntax, Vec::new()))));
            };
            shared = Some(secret);
        }
        let inbound_spi = self.new_child_spi(sa)?;
        let mut reply = vec![
            Payload::Sa(SaPayload {
                proposals: vec![esp_reply(number, inbound_spi, &suite)],
            }),
            Payload::TsI(remote_ts.clone()),
            Payload::TsR(local_ts.clone()),
        ];
        if mode == Mode::Transport {
            reply.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        Ok(Some(Ok(ChildReply {
            child: NewChild {
                child: config.name.clone(),
                inbound_spi,
                outbound_spi,
                suite,
                mode,
                local_ts,
                remote_ts,
                ni,
                nr,
                shared,
                exchange_initiator: false,
                rekeys,
            },
            reply,
            ke: ke_reply,
        })))
    }

    /// A CREATE_CHILD_SA request (responder, RFC 7296 1.3): a new or a
    /// rekeyed CHILD_SA (1.3.1, 1.3.3). Rekeying the IKE SA (1.3.2) and PFS
    /// are not supported: such proposals get NO_PROPOSAL_CHOSEN.
    pub(super) fn on_create_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let found = Found::of(payloads);
        let refuse = |this: &mut Endpoint, sa: &mut IkeSa, n: NotifyPayload| {
            this.respond(sa, h.exchange, h.message_id, &[Payload::Notify(n)])
                .map(|()| After::Keep)
        };
        if found
            .sa
            .is_some_and(|o| o.proposals.iter().any(|p| p.protocol == ProtocolId::Ike))
        {
            return self.on_ike_rekey_request(now, sa, h, payloads);
        }
        let rekeys = match find_notify(payloads, NotifyType::RekeySa) {
            None => None,
            Some(n) => {
                // The SPI the requester receives on: our outbound SPI.
                let old = crate::wire::spi32(&n.spi).and_then(|spi| {
                    sa.children
                        .iter()
                        .find(|c| c.outbound_spi == spi && !c.deleting)
                });
                match old {
                    Some(c) => Some(c.inbound_spi),
                    None => {
                        // RFC 7296 2.25: CHILD_SA_NOT_FOUND, naming the SPI.
                        let mut n = n.clone();
                        n.notify_type = NotifyType::ChildSaNotFound;
                        n.data.clear();
                        return refuse(self, sa, n);
                    }
                }
            }
        };
        let Some(ni) = found.nonce.cloned() else {
            return refuse(
                self,
                sa,
                NotifyPayload::new(NotifyType::InvalidSyntax, Vec::new()),
            );
        };
        let nr = self.nonce()?;
        let pfs = found.ke.map_or(Pfs::Without, |k| Pfs::With(k.group));
        let nonces = (ni.clone(), nr.clone());
        let child = match self.negotiate_child(sa, payloads, nonces, rekeys, pfs)? {
            None => Err((NotifyType::InvalidSyntax, Vec::new())),
            Some(c) => c,
        };
        match child {
            Err((t, data)) => {
                // The configuration of the CHILD_SA a refused rekey was
                // for; none for a new one that fit no configuration.
                let child = rekeys
                    .and_then(|old| sa.children.iter().find(|c| c.inbound_spi == old))
                    .map(|c| c.child.clone())
                    .unwrap_or_default();
                self.out.events.push_back(Event::ChildSaFailed {
                    ike: IkeSaId(sa.id),
                    name: self.peer(sa).name.clone(),
                    child,
                    notify: t,
                });
                refuse(self, sa, NotifyPayload::new(t, data))
            }
            Ok(ChildReply {
                child,
                mut reply,
                ke,
            }) => {
                // SA, Nr, [KEr,] TSi, TSr (RFC 7296 1.3.1).
                reply.insert(1, Payload::Nonce(nr.clone()));
                if let Some(ke) = ke {
                    reply.insert(2, ke);
                }
                self.respond(sa, h.exchange, h.message_id, &reply)?;
                if let Some(old) = rekeys {
                    if let Some(c) = sa.children.iter_mut().find(|c| c.inbound_spi == old) {
                        c.rekeyed_by_peer = Some((ni, nr));
                        // The peer rekeyed it; it deletes the old one.
                        c.rekey_at = Timestamp(u64::MAX);
                    }
                }
                self.child_up(now, sa, child)?;
                Ok(After::Keep)
            }
        }
    }

    /// Rekeys the CHILD_SA with our `inbound_spi` (RFC 7296 1.3.3, 2.8):
    /// the new one is reported when the peer answers, then the old one is
    /// deleted.
    pub fn rekey_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        inbound_spi: u32,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| this.rekey_child_of(now, sa, inbound_spi))
    }

    pub(super) fn rekey_child_of(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        old: u32,
    ) -> Result<(), IkeError> {
        let c = live_child(sa, old)?;
        c.rekey_at = Timestamp(u64::MAX);
        let c = c.clone();
        self.request_child(now, sa, c.child, Some(old), c.mode, c.local_ts, c.remote_ts)
    }

    /// Creates a CHILD_SA of child configuration `child` on IKE SA `id`
    /// (RFC 7296 1.3.1), with its selectors, narrowed by the peer; it is
    /// reported when the peer answers.
    pub fn create_child(
        &mut self,
        now: Timestamp,
        id: IkeSaId,
        child: &str,
    ) -> Result<(), IkeError> {
        self.with_sa(id, |this, sa| {
            this.child_config(sa, child)?;
            if sa.state != State::Established {
                return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
            }
            sa.missing_children.retain(|(name, _)| name != child);
            this.request_new_child(now, sa, child)
        })
    }

    /// A CREATE_CHILD_SA request for a new CHILD_SA of child configuration
    /// `child`, with its mode and selectors.
    fn request_new_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        child: &str,
    ) -> Result<(), IkeError> {
        let c = self.child_config(sa, child)?.clone();
        self.request_child(now, sa, c.name, None, c.mode, c.local_ts, c.remote_ts)
    }

    /// Requests the first child configuration without a CHILD_SA that is
    /// due, if no request is outstanding: one at a time (RFC 7296 2.3).
    pub(super) fn request_missing_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
    ) -> Result<(), IkeError> {
        if sa.state != State::Established
            || !sa.announced
            || sa.pending.is_some()
            || !sa.queued.is_empty()
        {
            return Ok(());
        }
        let Some(i) = sa.missing_children.iter().position(|(_, t)| *t <= now) else {
            return Ok(());
        };
        let (name, _) = sa.missing_children.remove(i);
        self.request_new_child(now, sa, &name)
    }

    /// A CREATE_CHILD_SA request: [N(REKEY_SA),] [N(USE_TRANSPORT_MODE),]
    /// SA, Ni, [KEi,] TSi, TSr (RFC 7296 1.3.1, 1.3.3), with PFS in the
    /// first group we are configured for, if any.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_child(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        child: String,
        old: Option<u32>,
        mode: Mode,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<(), IkeError> {
        let inbound_spi = self.new_child_spi(sa)?;
        let ni = self.nonce()?;
        let group = self
            .config
            .peer
            .esp_proposals
            .first()
            .and_then(|p| p.groups.first());
        let ke = match group {
            Some(g) => {
                let dh = DhPrivate::generate(*g, &self.rng)?;
                let ke = Payload::Ke(KePayload {
                    group: g.number(),
                    data: dh.public_value().to_vec(),
                });
                sa.pending_dh.push((ni.clone(), dh));
                Some(ke)
            }
            None => None,
        };
        let mut out = Vec::new();
        if let Some(old) = old {
            out.push(Payload::Notify(NotifyPayload {
                protocol_id: PROTO_ESP,
                spi: old.to_be_bytes().to_vec(),
                notify_type: NotifyType::RekeySa,
                data: Vec::new(),
            }));
        }
        if mode == Mode::Transport {
            out.push(notify(NotifyType::UseTransportMode, Vec::new()));
        }
        out.push(Payload::Sa(self.esp_offer(sa, inbound_spi, true)));
        out.push(Payload::Nonce(ni.clone()));
        out.extend(ke);
        out.push(Payload::TsI(local_ts.clone()));
        out.push(Payload::TsR(remote_ts.clone()));
        let kind = RequestKind::CreateChild {
            child,
            old,
            inbound_spi,
            ni,
            mode,
            local_ts,
            remote_ts,
        };
        self.request(now, sa, ExchangeType::CreateChildSa, out, kind)
    }

    /// The answer to our CREATE_CHILD_SA. A new CHILD_SA is reported; in
    /// a rekey the old one is then deleted, unless the peer rekeyed it at
    /// the same time and its rekey wins: then ours is the redundant one
    /// and is deleted (RFC 7296 2.8.1: the CHILD_SA made with the lowest of
    /// the four nonces is deleted by the side that created it).
    pub(super) fn on_create_child_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        payloads: &[Payload],
        asked: Asked<'_>,
    ) -> Result<After, IkeError> {
        let (inbound_spi, ni) = (asked.inbound_spi, asked.ni.clone());
        let name = asked.child.clone();
        let outcome_of = (inbound_spi, name.as_str(), asked.rekeys.is_none());
        let old = match asked.rekeys {
            None => None,
            Some(old) => match sa.children.iter().find(|c| c.inbound_spi == old) {
                Some(c) => Some(c.clone()),
                None => {
                    // Deleted meanwhile: what the peer made is not wanted
                    // either.
                    match self.accept_child_reply(sa, payloads, asked, None) {
                        Ok(_) => self.request_child_delete(now, sa, inbound_spi)?,
                        Err(e) => self.child_outcome(now, sa, outcome_of, Err(e))?,
                    }
                    return Ok(After::Keep);
                }
            },
        };
        let child = self.accept_child_reply(sa, payloads, asked, None);
        let nr = match &child {
            Ok(n) => n.nr.clone(),
            Err(_) => Vec::new(),
        };
        let ok = child.is_ok();
        let retry = self.retry_delay()?;
        self.child_outcome(now, sa, outcome_of, child)?;
        let Some(old) = old else {
            return Ok(After::Keep);
        };
        if !ok {
            if let Some(c) = sa
                .children
                .iter_mut()
                .find(|c| c.inbound_spi == old.inbound_spi)
            {
                // Try again later rather than never.
                c.rekey_at = now.saturating_add(retry);
            }
            return Ok(After::Keep);
        }
        let ours_lowest = old
            .rekeyed_by_peer
            .as_ref()
            .is_some_and(|(pni, pnr)| ni.min(nr) < pni.clone().min(pnr.clone()));
        let redundant = if ours_lowest {
            inbound_spi
        } else {
            old.inbound_spi
        };
        self.delete_child_of(now, sa, redundant)?;
        Ok(After::Keep)
    }

    /// An INFORMATIONAL request (RFC 7296 1.4): Deletes are answered with
    /// the Deletes of our halves; anything else (liveness) with an empty
    /// response.
    pub(super) fn on_informational(
        &mut self,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        payloads: &[Payload],
    ) -> Result<After, IkeError> {
        let mut delete_ike = false;
        let mut ours = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            match d.protocol_id {
                PROTO_IKE => delete_ike = true,
                PROTO_ESP => {
                    for spi in d.spis.iter().filter_map(|s| crate::wire::spi32(s)) {
                        let Some(i) = sa.children.iter().position(|c| c.outbound_spi == spi) else {
                            continue;
                        };
                        // Both sides deleting at once (RFC 7296 1.4.1): ours
                        // goes when our request is answered, and is not
                        // named in this response.
                        if sa.children[i].deleting {
                            continue;
                        }
                        let c = sa.children.remove(i);
                        self.out.child_deleted(sa.id, &self.peers[sa.peer].name, &c);
                        ours.push(c.inbound_spi.to_be_bytes().to_vec());
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        if !delete_ike && !ours.is_empty() {
            out.push(Payload::Delete(DeletePayload {
                protocol_id: PROTO_ESP,
                spi_size: 4,
                spis: ours,
            }));
        }
        self.respond(sa, h.exchange, h.message_id, &out)?;
        if delete_ike {
            return Ok(self.fail(sa, DownReason::DeletedByPeer));
        }
        if find_notify(payloads, NotifyType::AuthenticationFailed).is_some() {
            // The initiator refused our AUTH after we established the IKE
            // SA (RFC 7296 2.21.2): it has none.
            let reason = DownReason::PeerNotify(NotifyType::AuthenticationFailed);
            return Ok(self.fail(sa, reason));
        }
        Ok(After::Keep)
    }
}

/// The CHILD_SA with our `inbound_spi` of an established IKE SA, unless
/// it is being deleted.
fn live_child(sa: &mut IkeSa, inbound_spi: u32) -> Result<&mut ChildSa, IkeError> {
    if sa.state != State::Established {
        return Err(IkeError::NotEstablished(IkeSaId(sa.id)));
    }
    sa.children
        .iter_mut()
        .find(|c| c.inbound_spi == inbound_spi && !c.deleting)
        .ok_or(IkeError::UnknownChildSa(inbound_spi))
}
