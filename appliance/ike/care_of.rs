//! IKE in the mobility roles: the mobile node's IKE follows its care-of
//! address (RFC 4877 4.4: IKE runs between the care-of address and the
//! home agent's address; the CHILD_SAs, bound to the home address,
//! survive the movement), and the K bit's outcomes (RFC 6275 11.7.3,
//! `bitsgw_mobility::keying`) reach the IKE SAs.
//!
//! Without K the mobile node establishes its IKE SA again from the new
//! care-of address as soon as it moves, make-before-break: the new IKE SA
//! and its CHILD_SA are installed first (they replace the old SAs by name,
//! so the old CHILD_SA's removal afterwards, by its SPIs, removes
//! nothing), then the old IKE SA is deleted. With K the IKE SA stays until
//! the registration completes, and then both ends move it with no IKE
//! exchange (`bitsgw_ike::Endpoint::update_addresses`); a BA without K,
//! one over UDP (a NAT), or a care-of address of another address family
//! has it established again. At home nothing moves (see
//! `bitsgw_mobility::keying`): a care-of peer keeps its IKE SA and
//! initiates nothing until the next care-of address.

use super::*;
use bitsgw_mobility::keying::KeyManagement;

/// What the mobility stage tells the IKE thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MobilityChange {
    /// The mobile node moved (`ctl move`): its care-of address now, none
    /// at home.
    MovedTo(Option<IpAddr>),
    /// A registration completed, with what it means for the IKE SA.
    KeyManagement(KeyManagement),
}

/// How many earlier address pairs a peer still takes datagrams on.
const FORMER_ADDRESSES: usize = 4;

impl PeerRun {
    /// Whether a datagram between `local` and `remote` is this peer's:
    /// its addresses now, or ones it had before it followed a care-of
    /// address (its older IKE SAs, until they are gone).
    /// (`remote` none: the `"any"` peers.)
    pub(super) fn takes(&self, local: IpAddr, remote: Option<IpAddr>) -> bool {
        (self.settings.local, self.settings.remote) == (local, remote)
            || remote.is_some_and(|r| self.former.contains(&(local, r)))
            || (remote.is_none()
                && self.settings.remote.is_none()
                && self.also_local.contains(&local))
    }

    /// New addresses; the old ones are still taken for a while.
    /// An `"any"` peer stays one: it takes datagrams from any address, and
    /// from now on to `local` too.
    fn readdress(&mut self, local: IpAddr, remote: IpAddr) {
        let Some(old_remote) = self.settings.remote else {
            if local != self.settings.local && !self.also_local.contains(&local) {
                self.also_local.push(local);
            }
            return;
        };
        let old = (self.settings.local, old_remote);
        if old == (local, remote) {
            return;
        }
        self.former.retain(|a| *a != old && *a != (local, remote));
        if !old.0.is_unspecified() {
            self.former.push(old);
        }
        if self.former.len() > FORMER_ADDRESSES {
            self.former.remove(0);
        }
        self.settings.local = local;
        self.settings.remote = Some(remote);
    }
}

impl Thread {
    pub(super) fn follow_mobility(&mut self, m: MobilityChange) -> Result<String, String> {
        let mut done = Vec::new();
        match m {
            MobilityChange::MovedTo(care_of) => {
                for i in 0..self.peers.len() {
                    let s = &self.peers[i].settings;
                    let Some((local, remote)) = s.care_of.and_then(|c| c.addresses(care_of)) else {
                        continue;
                    };
                    if (local, Some(remote)) == (s.local, s.remote) {
                        continue;
                    }
                    let waits_for_k =
                        s.key_management_mobility && !self.peers[i].ike_sas.is_empty();
                    self.peers[i].readdress(local, remote);
                    let p = &self.peers[i];
                    if waits_for_k {
                        done.push(format!(
                            "peer \"{}\" moves with the registration",
                            p.settings.name
                        ));
                    } else {
                        self.reestablish(i);
                        done.push(format!(
                            "peer \"{}\" re-established from {local}",
                            self.peers[i].settings.name
                        ));
                    }
                }
            }
            MobilityChange::KeyManagement(k) => {
                let (KeyManagement::Move {
                    home,
                    home_agent,
                    care_of,
                }
                | KeyManagement::Reestablish {
                    home,
                    home_agent,
                    care_of,
                }
                | KeyManagement::Expect {
                    home,
                    home_agent,
                    care_of,
                }) = k;
                for i in self.peers_of(home) {
                    let mobile_node = self.peers[i].settings.care_of.is_some();
                    let what = match k {
                        KeyManagement::Move { .. } => self.move_ike_sa(i, home_agent, care_of),
                        KeyManagement::Reestablish { .. } if mobile_node => {
                            self.reestablish(i);
                            "is re-established from"
                        }
                        KeyManagement::Expect { .. } if !mobile_node => {
                            self.home_agent_follows(i, home_agent, care_of);
                            "is expected from"
                        }
                        _ => continue,
                    };
                    let name = &self.peers[i].settings.name;
                    done.push(format!("peer \"{name}\" {what} {care_of}"));
                }
            }
        }
        for d in &done {
            info!("IKE: {d}");
        }
        Ok(if done.is_empty() {
            "no IKE peer follows this movement".into()
        } else {
            done.join("; ")
        })
    }

    /// The peers of the mobile node with `home`: a mobile node's care-of
    /// peers, or the home agent's peers whose CHILD_SA carries `home` (its
    /// remote traffic selectors hold it).
    fn peers_of(&self, home: [u8; 16]) -> Vec<usize> {
        let home = IpAddr::from(home);
        (0..self.peers.len())
            .filter(|&i| {
                let s = &self.peers[i].settings;
                s.care_of.is_some()
                    || s.children.iter().any(|c| {
                        selectors(&self.policy, &c.outbound)
                            .1
                            .iter()
                            .any(|ts| ts.start <= home && home <= ts.end)
                    })
            })
            .collect()
    }

    /// Moves peer `i`'s IKE SAs between `home_agent` and `care_of` with no
    /// IKE exchange (RFC 6275 10.3.1, 11.7.3 under K; RFC 4877 4.4: the
    /// IKE SA runs between the care-of address and the home agent's
    /// address, and survives the movement): the mobile node's runs from
    /// the care-of address, the home agent's to it, on the ports it had.
    ///
    /// Only within its address family: an IKE SA between IPv6 addresses
    /// that would move to IPv4 ones (RFC 5555) or back is established
    /// again instead, make-before-break, as without K. The family is the
    /// IKE SA's own, the same at both ends, so both decide alike (the
    /// home agent expects the new IKE SA the mobile node establishes).
    /// Behind a NAT no `Move` comes (see `bitsgw_mobility::keying`).
    /// What became of it, for the log.
    fn move_ike_sa(&mut self, i: usize, home_agent: IpAddr, care_of: IpAddr) -> &'static str {
        let mobile_node = self.peers[i].settings.care_of.is_some();
        let (local, remote) = if mobile_node {
            (care_of, home_agent)
        } else {
            (home_agent, care_of)
        };
        let p = &self.peers[i];
        let moving: Vec<(IkeSaId, u16)> = p
            .ike_sas
            .iter()
            .filter_map(|(id, v)| {
                let at = v["local"].as_str()?.parse::<SocketAddr>().ok()?;
                (at.is_ipv4() == local.is_ipv4()).then_some((*id, at.port()))
            })
            .collect();
        if moving.is_empty() || moving.len() != p.ike_sas.len() {
            if mobile_node {
                self.peers[i].readdress(local, remote);
                self.reestablish(i);
                return "is re-established (another address family) from";
            }
            self.home_agent_follows(i, home_agent, care_of);
            return "is expected (another address family) from";
        }
        self.peers[i].readdress(local, remote);
        let now = self.now();
        let p = &mut self.peers[i];
        for (id, port) in moving {
            let (l, r) = (SocketAddr::new(local, port), SocketAddr::new(remote, port));
            match self.endpoints[p.endpoint].update_addresses(now, id, l, r) {
                Ok(()) => {
                    if let Some(v) = p.ike_sas.get_mut(&id) {
                        v["local"] = json!(l.to_string());
                        v["remote"] = json!(r.to_string());
                    }
                }
                // Not established (being rekeyed away or going down):
                // what replaces it runs from the peer's addresses now.
                Err(e) => {
                    warn!(peer = %p.settings.name, error = %e, "IKE: an IKE SA did not move");
                }
            }
        }
        "follows"
    }

    /// The home agent's peer `i` runs IKE between its address
    /// `home_agent` and the mobile node's `care_of` from now on.
    fn home_agent_follows(&mut self, i: usize, home_agent: IpAddr, care_of: IpAddr) {
        self.peers[i].readdress(home_agent, care_of);
    }

    /// Establishes peer `i`'s IKE SA again from its addresses now: the
    /// IKE SAs it has are deleted once the new one's CHILD_SA is installed
    /// ([`Thread::retire_replaced`]).
    fn reestablish(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.held {
            return;
        }
        let old: Vec<IkeSaId> = p.ike_sas.keys().copied().collect();
        p.retiring.extend(old);
        p.initiate_at = Some(Instant::now());
    }

    /// A CHILD_SA `c` was established: if its IKE SA re-established peer
    /// `i`'s and now has every child of the peer installed, the IKE SAs it
    /// replaced go (never before all its CHILD_SAs are in place:
    /// make-before-break).
    pub(super) fn retire_replaced(&mut self, i: usize, c: &ChildSaEstablished) {
        let now = self.now();
        let p = &mut self.peers[i];
        if p.retiring.is_empty() || p.retiring.contains(&c.ike) {
            return;
        }
        let new_ike = ike_sa_text(c.ike);
        let on_new = |child: &str| {
            p.children
                .values()
                .any(|v| v["child"] == child && v[IKE_SA] == new_ike.as_str())
        };
        if !p.settings.children.iter().all(|ch| on_new(ch.name())) {
            return;
        }
        for old in std::mem::take(&mut p.retiring) {
            info!(peer = %p.settings.name, "IKE: the IKE SA replaced from the new care-of address is deleted");
            if let Err(e) = self.endpoints[p.endpoint].delete_ike(now, old) {
                warn!(peer = %p.settings.name, error = %e, "IKE: replaced IKE SA not deleted");
            }
        }
    }

    /// Whether a care-of peer has an IKE SA (the mobile node's K may be
    /// set), for the main loop.
    pub(super) fn publish_care_of_ike(&self) {
        let up = self
            .peers
            .iter()
            .any(|p| p.settings.care_of.is_some() && !p.ike_sas.is_empty());
        self.care_of_ike_up.store(up, Ordering::Relaxed);
    }
}
