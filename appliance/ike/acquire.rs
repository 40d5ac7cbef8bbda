//! A trapping peer's acquires: the stages' signals for its children's
//! outbound SAs, the negotiations they start and their back-off.

use super::*;

/// A trapping peer's acquires (RFC 4301 5.1): the stages' signal for each
/// child's outbound SA, by the child's name, and what became of the
/// negotiations they started, one at a time.
pub(super) struct Acquire {
    pub(super) signals: Vec<(String, Arc<AcquireSignal>)>,
    /// The negotiation an acquire started, under way since then, on this
    /// IKE SA, for this child.
    pub(super) negotiating: Option<(Instant, IkeSaId, String)>,
    /// Acquires before this are not acted on (back-off after a failure).
    pub(super) not_before: Option<Instant>,
    /// The back-off after the next failure.
    pub(super) backoff: Duration,
    /// Negotiations started by acquires.
    pub(super) started: u64,
    /// Of those, how many failed.
    pub(super) failed: u64,
    /// Acquires not acted on: a negotiation under way, the SA up, the
    /// peer held or backing off.
    pub(super) deferred: u64,
}

impl Acquire {
    /// The acquires of `children` whose outbound SA has a signal in
    /// `signals` (from [`super::acquire_signals`]); none without any.
    pub(super) fn of_children(
        children: &[ChildSettings],
        signals: &BTreeMap<String, Arc<AcquireSignal>>,
    ) -> Option<Acquire> {
        let signals: Vec<_> = children
            .iter()
            .filter_map(|c| {
                let s = signals.get(&c.outbound)?;
                Some((c.name().to_string(), Arc::clone(s)))
            })
            .collect();
        (!signals.is_empty()).then(|| Acquire::new(signals))
    }

    pub(super) fn new(signals: Vec<(String, Arc<AcquireSignal>)>) -> Acquire {
        Acquire {
            signals,
            negotiating: None,
            not_before: None,
            backoff: ACQUIRE_BACKOFF,
            started: 0,
            failed: 0,
            deferred: 0,
        }
    }

    /// The negotiation under way on IKE SA `ike` ended for `child` (for
    /// every child when the IKE SA went down, `None`): with the CHILD_SA
    /// installed, or not (the next acquire waits out the back-off, which
    /// then doubles).
    pub(super) fn ended(&mut self, ike: IkeSaId, child: Option<&str>, established: bool) {
        let ours = |(_, on, wanted): &(Instant, IkeSaId, String)| {
            *on == ike && child.is_none_or(|c| c == wanted)
        };
        if !self.negotiating.as_ref().is_some_and(ours) {
            return;
        }
        self.negotiating = None;
        if established {
            self.not_before = None;
            self.backoff = ACQUIRE_BACKOFF;
        } else {
            self.failed();
        }
    }

    /// A negotiation failed: acquires wait out the back-off, which then
    /// doubles.
    pub(super) fn failed(&mut self) {
        self.failed += 1;
        self.not_before = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(ACQUIRE_BACKOFF_MAX);
    }
}

impl Thread {
    /// Acts on the acquires the stages raised for trapping peers' children:
    /// starts the IKE SA (whose IKE_AUTH and the CREATE_CHILD_SAs after it
    /// make every child), or the CHILD_SA on the IKE SA that lacks it,
    /// unless a negotiation is under way or backing off.
    pub(super) fn acquire_due(&mut self) {
        let now = self.now();
        for p in &mut self.peers {
            let (Some(a), Some(remote)) = (p.acquire.as_mut(), p.settings.remote) else {
                continue;
            };
            // Every signal is taken; the first child without a CHILD_SA
            // is acted on, the others wait for their next packet.
            let raised: Vec<String> = a
                .signals
                .iter()
                .filter(|(_, s)| s.take())
                .map(|(child, _)| child.clone())
                .collect();
            if raised.is_empty() {
                continue;
            }
            let stale = a
                .negotiating
                .as_ref()
                .filter(|(t, _, _)| t.elapsed() >= ACQUIRE_STALE)
                .map(|(_, ike, _)| *ike);
            if let Some(ike) = stale {
                a.ended(ike, None, false);
            }
            let installed = |child: &str| p.children.values().any(|c| c["child"] == child);
            let wanted = raised.iter().find(|c| !installed(c));
            let backing_off = a.not_before.is_some_and(|t| Instant::now() < t);
            let Some(child) = wanted.filter(|_| !p.held && a.negotiating.is_none() && !backing_off)
            else {
                a.deferred += raised.len() as u64;
                continue;
            };
            a.deferred += raised.len() as u64 - 1;
            let child = child.clone();
            let started = match p.ike_sas.keys().next() {
                Some(ike) => self.endpoints[p.endpoint]
                    .create_child(now, *ike, &child)
                    .map(|()| *ike),
                None => self.endpoints[p.endpoint].initiate(
                    now,
                    SocketAddr::new(p.settings.local, IKE_PORT),
                    SocketAddr::new(remote, IKE_PORT),
                ),
            };
            a.started += 1;
            match started {
                Ok(ike) => {
                    info!(peer = %p.settings.name, child = %child, ike_sa_up = !p.ike_sas.is_empty(), "IKE: acquire: negotiating on traffic");
                    a.negotiating = Some((Instant::now(), ike, child));
                }
                Err(e) => {
                    warn!(peer = %p.settings.name, error = %e, "IKE: acquire: could not initiate");
                    a.failed();
                }
            }
        }
    }
}
