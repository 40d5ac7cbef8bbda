//! A trapping peer's acquires: the stages' signal for its outbound SA,
//! the negotiations it starts and their back-off.

use super::*;

/// A trapping peer's acquires (RFC 4301 5.1): the stages' signal for its
/// child's outbound SA, and what became of the negotiations it started.
pub(super) struct Acquire {
    pub(super) signal: Arc<AcquireSignal>,
    /// The negotiation an acquire started, under way since then, on this
    /// IKE SA.
    pub(super) negotiating: Option<(Instant, IkeSaId)>,
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
    pub(super) fn new(signal: Arc<AcquireSignal>) -> Acquire {
        Acquire {
            signal,
            negotiating: None,
            not_before: None,
            backoff: ACQUIRE_BACKOFF,
            started: 0,
            failed: 0,
            deferred: 0,
        }
    }

    /// The negotiation under way on IKE SA `ike` ended: with the
    /// CHILD_SA installed, or not (the next acquire waits out the
    /// back-off, which then doubles).
    pub(super) fn ended(&mut self, ike: IkeSaId, established: bool) {
        if self.negotiating.is_none_or(|(_, on)| on != ike) {
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
    /// Acts on the acquires the stages raised for trapping peers: starts
    /// the IKE SA, or the CHILD_SA on the IKE SA that lost it, unless a
    /// negotiation is under way or backing off.
    pub(super) fn acquire_due(&mut self) {
        let now = self.now();
        for p in &mut self.peers {
            let (Some(a), Some(remote)) = (p.acquire.as_mut(), p.settings.remote) else {
                continue;
            };
            if !a.signal.take() {
                continue;
            }
            if let Some((_, ike)) = a.negotiating.filter(|(t, _)| t.elapsed() >= ACQUIRE_STALE) {
                a.ended(ike, false);
            }
            let backing_off = a.not_before.is_some_and(|t| Instant::now() < t);
            if p.held || !p.children.is_empty() || a.negotiating.is_some() || backing_off {
                a.deferred += 1;
                continue;
            }
            let started = match p.ike_sas.keys().next() {
                Some(ike) => {
                    let (local_ts, remote_ts) = p
                        .settings
                        .children
                        .first()
                        .map(|c| selectors(&self.policy, &c.outbound))
                        .unwrap_or_default();
                    self.endpoints[p.endpoint]
                        .create_child(now, *ike, local_ts, remote_ts)
                        .map(|()| *ike)
                }
                None => self.endpoints[p.endpoint].initiate(
                    now,
                    SocketAddr::new(p.settings.local, IKE_PORT),
                    SocketAddr::new(remote, IKE_PORT),
                ),
            };
            a.started += 1;
            match started {
                Ok(ike) => {
                    a.negotiating = Some((Instant::now(), ike));
                    info!(peer = %p.settings.name, ike_sa_up = !p.ike_sas.is_empty(), "IKE: acquire: negotiating on traffic");
                }
                Err(e) => {
                    warn!(peer = %p.settings.name, error = %e, "IKE: acquire: could not initiate");
                    a.failed();
                }
            }
        }
    }
}
