//! Sending and receiving messages: building a message of an IKE SA (in
//! clear for IKE_SA_INIT, in an SK payload otherwise, RFC 7296 3.14),
//! requests with their retransmission state and the window of one (2.1,
//! 2.3), cached responses, and the dispatch of a received datagram to its
//! IKE SA and exchange.

use super::*;

impl Endpoint {
    /// Builds a message of `sa`: IKE_SA_INIT in clear, every other one
    /// inside an SK payload.
    pub(super) fn build(
        &mut self,
        sa: &IkeSa,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<Vec<u8>, IkeError> {
        self.out.count_notifies_sent(payloads);
        let header = HeaderRepr {
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            next_payload: PayloadType::NoNext,
            minor_version: 0,
            exchange,
            flags: Flags::new(sa.initiator, response),
            message_id,
            length: 0,
        };
        if exchange == ExchangeType::IkeSaInit {
            return Ok(Message {
                header,
                payloads: payloads.to_vec(),
            }
            .to_vec()?);
        }
        let sk = sa
            .sk_out
            .as_ref()
            .ok_or(IkeError::NotEstablished(IkeSaId(sa.id)))?;
        let mut inner = vec![0u8; chain_len(payloads)];
        emit_chain(payloads, &mut inner)?;
        let first = payloads.first().map_or(PayloadType::NoNext, Payload::kind);
        Ok(sk.seal(&header, first, &inner, &self.rng)?)
    }

    /// Sends a request, or queues it behind the outstanding one (a window
    /// of one, RFC 7296 2.3).
    pub(super) fn request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        payloads: Vec<Payload>,
        kind: RequestKind,
    ) -> Result<(), IkeError> {
        if sa.pending.is_some() {
            sa.queued.push_back((exchange, payloads, kind));
            return Ok(());
        }
        let message_id = sa.next_message_id;
        let bytes = self.build(sa, exchange, false, message_id, &payloads)?;
        sa.next_message_id = sa.next_message_id.wrapping_add(1);
        self.out.counters.requests_sent.bump(exchange);
        self.out.send(sa, bytes.clone());
        let initial = self.peer(sa).retransmit.initial;
        sa.pending = Some(Pending {
            message_id,
            exchange,
            kind,
            bytes,
            retransmits: 0,
            interval: initial,
            next_at: now.saturating_add(initial),
        });
        Ok(())
    }

    pub(super) fn send_queued(&mut self, now: Timestamp, sa: &mut IkeSa) -> Result<(), IkeError> {
        if sa.pending.is_none() {
            if let Some((exchange, payloads, kind)) = sa.queued.pop_front() {
                return self.request(now, sa, exchange, payloads, kind);
            }
        }
        Ok(())
    }

    pub(super) fn respond(
        &mut self,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        message_id: u32,
        payloads: &[Payload],
    ) -> Result<(), IkeError> {
        let bytes = self.build(sa, exchange, true, message_id, payloads)?;
        self.out.counters.responses_sent.bump(exchange);
        self.out.send(sa, bytes.clone());
        sa.last_response = Some((message_id, bytes));
        Ok(())
    }

    /// Handles one received UDP payload (IKE on port 500, or after the
    /// non-ESP marker on 4500 once the caller stripped it).
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
        local: SocketAddr,
        data: &[u8],
    ) {
        self.out.counters.datagrams_received += 1;
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(WireError::BadMajorVersion(_)) => {
                return self.out.drop(DropReason::BadMajorVersion)
            }
            Err(e @ WireError::UnsupportedCritical(_)) => {
                // RFC 7296 2.5: an IKE_SA_INIT request is answered (others
                // are answered once decrypted, or are responses).
                let request = Header::new_checked(data)
                    .and_then(|h| HeaderRepr::parse(&h))
                    .ok()
                    .filter(|h| {
                        h.exchange == ExchangeType::IkeSaInit && !h.flags.response() && h.spi_r == 0
                    });
                match request {
                    Some(h) => {
                        self.out.counters.requests_received.bump(h.exchange);
                        if let Err(e) = self.stateless_reply(&h, remote, local, refusal(e)) {
                            self.local_failure(e);
                        }
                    }
                    None => self.out.drop(DropReason::Malformed),
                }
                return;
            }
            Err(_) => return self.out.drop(DropReason::Malformed),
        };
        let h = msg.header;
        // Message::parse checked that the header's length fits.
        let bytes = &data[..h.length as usize];
        if h.exchange == ExchangeType::IkeSaInit && !h.flags.response() {
            if h.spi_r != 0 || h.message_id != 0 || !h.flags.initiator() {
                return self.out.drop(DropReason::Malformed);
            }
            if let Err(e) = self.responder_init(now, remote, local, bytes, msg) {
                self.local_failure(e);
            }
            return;
        }
        let ours = if h.flags.initiator() {
            h.spi_r
        } else {
            h.spi_i
        };
        let Some(mut sa) = self.sas.remove(&ours) else {
            return self.out.drop(DropReason::UnknownSpi);
        };
        let spis_match = h.spi_i == sa.spi_i
            && (h.spi_r == sa.spi_r || (sa.state == State::InitSent && h.spi_r != 0));
        let after = if !spis_match || h.flags.initiator() == sa.initiator {
            self.out.drop(DropReason::UnknownSpi);
            Ok(After::Keep)
        } else if h.flags.response() {
            self.on_response(now, &mut sa, &h, bytes, msg.payloads, (remote, local))
        } else {
            self.on_request(now, &mut sa, &h, bytes, msg.payloads, (remote, local))
        };
        let after = after.unwrap_or_else(|e| {
            self.local_failure(e);
            After::Keep
        });
        match after {
            After::Keep => {
                self.sas.insert(ours, sa);
            }
            After::Remove => self.forget(&sa),
        }
    }

    pub(super) fn local_failure(&mut self, _e: IkeError) {
        self.out.drop(DropReason::LocalFailure);
    }

    /// Opens a message's SK payload (RFC 7296 3.14). `Err(None)`: dropped
    /// and counted; `Err(Some(error))`: authentic but its inner payloads are
    /// malformed (answered with INVALID_SYNTAX when a request). With a NAT
    /// between the peers, an authentic new message may move the IKE SA to
    /// the addresses it came on ([`Endpoint::follow`]).
    pub(super) fn open(
        &mut self,
        sa: &mut IkeSa,
        bytes: &[u8],
        payloads: &[Payload],
        (remote, local): (SocketAddr, SocketAddr),
    ) -> Result<Vec<Payload>, Option<WireError>> {
        let (Some(Payload::Sk(sk)), Some(keys)) = (payloads.last(), sa.sk_in.as_ref()) else {
            self.out.drop(DropReason::Malformed);
            return Err(None);
        };
        let body_at = bytes.len() - sk.body.len();
        let inner = match keys.open(bytes, body_at) {
            Ok(i) => i,
            Err(_) => {
                self.out.drop(DropReason::IntegrityCheckFailed);
                return Err(None);
            }
        };
        if sa.nat_local || sa.nat_remote {
            self.follow(sa, remote, local);
        }
        parse_chain(sk.first_inner, &inner).map_err(Some)
    }

    /// RFC 7296 2.23 with a NAT between the peers, for an authentic message
    /// that is new (a request of the next message ID or the response to
    /// ours, never a replay): the peer's move to UDP 4500 is followed by
    /// both sides; after that, only the side not behind a NAT follows the
    /// peer to a new address or port (the NAT's new mapping), while the
    /// side behind it SHOULD NOT, or one forged packet could move it. Once
    /// on 4500 an IKE SA stays there: its ESP is in UDP to and from 4500
    /// (RFC 3948). An established IKE SA that moves is reported, so the UDP
    /// encapsulation of its CHILD_SAs follows.
    pub(super) fn follow(&mut self, sa: &mut IkeSa, remote: SocketAddr, local: SocketAddr) {
        let on_nat_t = sa.local.port() == NAT_T_PORT;
        let to_nat_t = local.port() == NAT_T_PORT && !on_nat_t;
        let back_from_nat_t = on_nat_t && local.port() != NAT_T_PORT;
        if (!to_nat_t && sa.nat_local)
            || back_from_nat_t
            || (sa.remote, sa.local) == (remote, local)
        {
            return;
        }
        if !sa.initiator {
            // The entry follows the IKE SA, so that it is removed with it.
            if let Some(id) = self.by_initiator.remove(&(sa.remote, sa.spi_i)) {
                self.by_initiator.insert((remote, sa.spi_i), id);
            }
        }
        sa.remote = remote;
        sa.local = local;
        if sa.state == State::Established && sa.announced {
            self.out.events.push_back(Event::IkeSaMoved {
                ike: IkeSaId(sa.id),
                local,
                remote,
            });
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        outer: Vec<Payload>,
        path: (SocketAddr, SocketAddr),
    ) -> Result<After, IkeError> {
        if h.message_id != sa.peer_message_id {
            let previous = sa.peer_message_id.wrapping_sub(1);
            match &sa.last_response {
                Some((id, resp)) if *id == previous && h.message_id == previous => {
                    // To where the retransmission came from (RFC 7296
                    // 2.11): after a NAT lost its mapping, the answer
                    // lost on the old one reaches the peer on the new one
                    // (which the IKE SA follows only on a new message).
                    let (remote, local) = path;
                    self.out.counters.responses_resent += 1;
                    self.out.transmits.push_back(Transmit {
                        remote,
                        local,
                        contents: resp.clone(),
                    });
                }
                _ => self.out.drop(DropReason::InvalidMessageId),
            }
            return Ok(After::Keep);
        }
        let allowed = matches!(
            (h.exchange, sa.state),
            (ExchangeType::IkeAuth, State::HalfOpen)
                | (
                    ExchangeType::Informational | ExchangeType::CreateChildSa,
                    State::Established | State::Deleting
                )
        );
        if !allowed {
            self.out.drop(DropReason::UnexpectedExchange);
            return Ok(After::Keep);
        }
        let payloads = match self.open(sa, bytes, &outer, path) {
            Ok(p) => p,
            Err(None) => return Ok(After::Keep),
            Err(Some(e)) => {
                // Authentic, so the message ID is used up (RFC 7296 2.21.2).
                sa.peer_message_id = sa.peer_message_id.wrapping_add(1);
                let n = [refusal(e)];
                self.respond(sa, h.exchange, h.message_id, &n)?;
                if h.exchange == ExchangeType::IkeAuth {
                    self.refuse_ike_sa(now, sa);
                }
                return Ok(After::Keep);
            }
        };
        self.out.counters.requests_received.bump(h.exchange);
        self.out.count_notifies_received(&payloads);
        sa.peer_message_id = sa.peer_message_id.wrapping_add(1);
        sa.last_heard = now;
        match h.exchange {
            ExchangeType::IkeAuth => self.on_auth_request(now, sa, h, &payloads),
            ExchangeType::Informational => self.on_informational(sa, h, &payloads),
            _ => self.on_create_child(now, sa, h, &payloads),
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Timestamp,
        sa: &mut IkeSa,
        h: &HeaderRepr,
        bytes: &[u8],
        outer: Vec<Payload>,
        path: (SocketAddr, SocketAddr),
    ) -> Result<After, IkeError> {
        let Some(p) = &sa.pending else {
            self.out.drop(DropReason::InvalidMessageId);
            return Ok(After::Keep);
        };
        if p.message_id != h.message_id || p.exchange != h.exchange {
            self.out.drop(DropReason::InvalidMessageId);
            return Ok(After::Keep);
        }
        let kind = p.kind.clone();
        let payloads = if h.exchange == ExchangeType::IkeSaInit {
            outer
        } else {
            match self.open(sa, bytes, &outer, path) {
                Ok(p) => p,
                Err(None) => return Ok(After::Keep),
                Err(Some(_)) => {
                    self.out.drop(DropReason::Malformed);
                    return Ok(After::Keep);
                }
            }
        };
        self.out.counters.responses_received.bump(h.exchange);
        self.out.count_notifies_received(&payloads);
        sa.last_heard = now;
        sa.pending = None;
        let name = self.peer(sa).name.clone();
        let after = match kind {
            RequestKind::Init => self.on_init_response(now, sa, h, bytes, &payloads)?,
            RequestKind::Auth => self.on_auth_response(now, sa, &payloads)?,
            RequestKind::Liveness => After::Keep,
            RequestKind::DeleteChild(spi) => {
                if let Some(i) = sa.children.iter().position(|c| c.inbound_spi == spi) {
                    let c = sa.children.remove(i);
                    self.out.child_deleted(sa.id, &name, &c);
                }
                After::Keep
            }
            RequestKind::CreateChild {
                child,
                old,
                inbound_spi,
                ni,
                mode,
                local_ts,
                remote_ts,
            } => {
                let dh = Self::take_dh(sa, &ni);
                let asked = Asked {
                    child,
                    inbound_spi,
                    mode,
                    local_ts: &local_ts,
                    remote_ts: &remote_ts,
                    ni,
                    rekeys: old,
                    pfs: dh
                        .as_ref()
                        .map_or(Pfs::Without, |d| Pfs::With(d.group().number())),
                    dh,
                };
                self.on_create_child_response(now, sa, &payloads, asked)?
            }
            RequestKind::RekeyIke { spi, ni } => {
                self.on_ike_rekey_response(now, sa, &payloads, spi, ni)?
            }
            RequestKind::DeleteIke => {
                self.out.close(sa, &name, DownReason::DeletedLocally);
                After::Remove
            }
        };
        if after == After::Keep {
            self.send_queued(now, sa)?;
            self.request_missing_child(now, sa)?;
        }
        Ok(after)
    }

    pub(super) fn fail(&mut self, sa: &mut IkeSa, reason: DownReason) -> After {
        let name = self.peer(sa).name.clone();
        self.out.close(sa, &name, reason);
        After::Remove
    }
}
