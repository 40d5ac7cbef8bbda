//! What a home registration means for the key management between a
//! mobile node and its home agent: the Key Management Mobility Capability
//! (K) bit of Binding Updates and Acknowledgements (RFC 6275 6.1.7, 6.1.8).
//!
//! The mobile node sets K in a Binding Update to its home agent when its
//! key management (here its IKEv2 SA with the home agent, RFC 4877 4.4)
//! survives movement and that IKE SA exists (RFC 6275 11.7.1); never with
//! manual keys. The home agent sets K in the Acknowledgement when the BU
//! had it and its own key management survives movement too (RFC 6275
//! 10.3.1). When a registration with K on both sides completes, both move
//! their IKE SA to the new care-of address without an IKE exchange; when
//! the BU had K and the BA did not, the mobile node establishes its IKE SA
//! again from the new care-of address (RFC 6275 11.7.3).
//!
//! Without K the mobile node establishes its IKE SA again from its new
//! care-of address; the home agent, told where the binding moved, expects
//! it from there.
//!
//! A registration over UDP (its BA carries the NAT Detection option, RFC
//! 5555 4.1: the IPv4 care-of address is behind a NAT, or the home agent
//! forces UDP) is treated as one without K, though the BA's K stays set:
//! an IKE SA's NAT state and ports come only from its IKE_SA_INIT's NAT
//! detection (RFC 7296 2.23), and without an exchange neither end learns
//! the port the NAT maps the mobile node's IKE to (the mobility tunnel's
//! mapping is another one), so the home agent could not reach the moved
//! IKE SA. Both ends decide from the same BA: the home agent sends the
//! option exactly when it does not report a [`KeyManagement::Move`], and
//! the mobile node reports none when the option is there; the mobile
//! node establishes its IKE SA again (make-before-break), which the home
//! agent expects. The IKE SA also moves only within its address family;
//! that is the key management's own check, on the IKE SA's addresses.
//!
//! A de-registration (the node back home) moves nothing here: RFC 6275
//! 10.3.2 would move the key management to the home address, which is the
//! host's behind the appliance, not the appliance's own; the mobile node
//! therefore clears K at home and the home agent clears it in the BA of a
//! de-registration.

use std::collections::VecDeque;
use std::net::IpAddr;

/// Outcomes kept for the key management at most: without key management
/// beside the stage nobody takes them, and the oldest go.
const QUEUE_LIMIT: usize = 64;

/// Queues `k` for the key management, the oldest going beyond
/// [`QUEUE_LIMIT`].
pub(crate) fn queue(q: &mut VecDeque<KeyManagement>, k: KeyManagement) {
    if q.len() >= QUEUE_LIMIT {
        q.pop_front();
    }
    q.push_back(k);
}

/// What becomes of the IKE SA between a mobile node and its home agent
/// after a completed home registration, for the key management beside
/// the mobility stage to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyManagement {
    /// K was set in the BU and the BA: the IKE SA moves to the care-of
    /// address, with no IKE exchange (RFC 6275 10.3.1, 11.7.3).
    Move {
        /// The mobile node's home address.
        home: [u8; 16],
        /// The home agent's address of the care-of address's family: the
        /// IKE SA's other end.
        home_agent: IpAddr,
        /// The address the IKE SA now runs from (mobile node) or to (home
        /// agent): the IPv6 care-of address, or for an IPv4 care-of
        /// address (RFC 5555) the address the Binding Update came from,
        /// which behind a NAT is the NAT's.
        care_of: IpAddr,
    },
    /// The mobile node's BU had K and the home agent's BA did not: the
    /// home agent's key management does not survive movement, and the
    /// mobile node establishes its IKE SA again from the care-of address
    /// (RFC 6275 11.7.3).
    Reestablish {
        /// The mobile node's home address.
        home: [u8; 16],
        /// As for [`KeyManagement::Move`].
        home_agent: IpAddr,
        /// The mobile node's care-of address.
        care_of: IpAddr,
    },
    /// At the home agent, a binding moved without K: the mobile node
    /// establishes its IKE SA again from the new care-of address (RFC
    /// 6275 11.7.3), which is where the home agent expects it from now.
    Expect {
        /// The mobile node's home address.
        home: [u8; 16],
        /// As for [`KeyManagement::Move`].
        home_agent: IpAddr,
        /// Where its IKE comes from: as for [`KeyManagement::Move`].
        care_of: IpAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outcomes nobody takes (no IKE beside the stage) are kept up to
    /// the limit, the oldest going first.
    #[test]
    fn the_queue_keeps_the_newest_outcomes_up_to_its_limit() {
        let mut q = VecDeque::new();
        let k = |n: u8| KeyManagement::Expect {
            home: [0; 16],
            home_agent: IpAddr::from([192, 0, 2, 1]),
            care_of: IpAddr::from([198, 51, 100, n]),
        };
        for n in 0..70 {
            queue(&mut q, k(n));
        }
        assert_eq!(q.len(), QUEUE_LIMIT);
        assert_eq!(q.front(), Some(&k(6)));
        assert_eq!(q.back(), Some(&k(69)));
    }
}
