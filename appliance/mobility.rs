//! The mobility stage of the `mn` and `ha` roles in the appliance: built
//! from the configuration, moved and refreshed by control requests and
//! replay events, shown as bindings, and keyed with the IKE thread (the K
//! bit, [`Keying`]).

use crate::config::{
    care_of_address, check_care_of, parse_attachment, ApplianceConfig, MobilitySettings,
};
use crate::ike::{IkeThread, MobilityChange};
use bitsgw_mobility::binding::CareOf;
use bitsgw_mobility::ha::HomeAgent;
use bitsgw_mobility::keying::KeyManagement;
use bitsgw_mobility::mn::{Attachment, MobileNode};
use bitsgw_pipeline::runner::Running;
use bitsgw_pipeline::{Gateway, Mobility};
use bitsgw_wire::Timestamp;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::info;

/// The mobility stage the settings describe; a mobile node with an initial
/// attachment has moved there at `now` (its Binding Update is queued).
pub fn build(settings: &MobilitySettings, now: Timestamp) -> Mobility {
    match settings {
        MobilitySettings::HomeAgent(cfg) => Mobility::HomeAgent(HomeAgent::new(cfg.clone())),
        MobilitySettings::MobileNode { config, attachment } => {
            let mut mn = MobileNode::new(config.clone());
            if let Some(a) = attachment {
                mn.handle_move(*a, true, now);
            }
            Mobility::MobileNode(mn)
        }
    }
}

/// What a control request or replay event asks of a mobile node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnControl {
    /// A movement; `keep_old` is make-before-break.
    Move {
        /// Where to.
        attachment: Attachment,
        /// Whether data stays on the old care-of address until the BA.
        keep_old: bool,
    },
    /// Re-register now (also the NAT keepalive).
    Refresh,
}

/// Checks a `move` request against the configuration: the mn role, and
/// an attachment it can take (one IKE can run from, with a care-of peer).
pub fn parse_move(cfg: &ApplianceConfig, text: &str) -> Result<Attachment, String> {
    match &cfg.mobility {
        Some(MobilitySettings::MobileNode { config, .. }) => {
            let a = parse_attachment(config, text)?;
            if let Some(c) =
                care_of_address(a).filter(|_| cfg.peers.iter().any(|p| p.care_of.is_some()))
            {
                check_care_of(&cfg.network_addresses, c)?;
            }
            Ok(a)
        }
        _ => Err(format!(
            "move needs the mn role; this appliance is {}",
            cfg.role.name()
        )),
    }
}

/// Refuses `refresh` outside the mn role.
pub fn check_refresh(cfg: &ApplianceConfig) -> Result<(), String> {
    match &cfg.mobility {
        Some(MobilitySettings::MobileNode { .. }) => Ok(()),
        _ => Err(format!(
            "refresh needs the mn role; this appliance is {}",
            cfg.role.name()
        )),
    }
}

/// Applies `op` to the gateway's mobile node (nothing without one: the
/// copy the receive threads dispatch with has no mobility stage).
pub fn control(gw: &mut Gateway, op: MnControl, now: Timestamp) {
    if let Some(Mobility::MobileNode(mn)) = gw.mobility_mut() {
        match op {
            MnControl::Move {
                attachment,
                keep_old,
            } => mn.handle_move(attachment, keep_old, now),
            MnControl::Refresh => mn.refresh(now),
        }
    }
}

/// The K bit between the mobility stage and the IKE thread, driven by
/// the main loop: whether the mobile node's IKE SA exists goes to the
/// mobile node (its Binding Updates carry K then), and what completed
/// registrations mean for the IKE SAs goes to the IKE thread.
pub struct Keying {
    ike_up: bool,
    outcomes: Arc<Mutex<Sender<KeyManagement>>>,
    received: Receiver<KeyManagement>,
    /// When the gateways were last asked for outcomes.
    asked: Instant,
}

/// How often the gateways are asked for the outcomes of registrations
/// (each ask is a control action on every worker).
const ASK_EVERY: Duration = Duration::from_millis(100);

impl Default for Keying {
    fn default() -> Self {
        let (tx, received) = channel();
        Keying {
            ike_up: false,
            outcomes: Arc::new(Mutex::new(tx)),
            received,
            asked: Instant::now(),
        }
    }
}

impl Keying {
    /// One turn: the IKE SA's state to the mobile node when it changed;
    /// the outcomes the gateways reported since they were last asked to
    /// the IKE thread, and the gateways asked again (every [`ASK_EVERY`]).
    pub fn follow(&mut self, running: &Running, ike: &IkeThread) {
        let up = ike.care_of_ike_up.load(Ordering::Relaxed);
        if up != self.ike_up {
            self.ike_up = up;
            running.apply(Arc::new(move |gw| {
                if let Some(Mobility::MobileNode(mn)) = gw.mobility_mut() {
                    mn.set_ike_sa(up);
                }
            }));
        }
        while let Ok(k) = self.received.try_recv() {
            info!(outcome = ?k, "registration: IKE SA");
            ike.tell(MobilityChange::KeyManagement(k));
        }
        if self.asked.elapsed() < ASK_EVERY {
            return;
        }
        self.asked = Instant::now();
        let outcomes = Arc::clone(&self.outcomes);
        running.apply(Arc::new(move |gw| {
            let Ok(tx) = outcomes.lock() else {
                return;
            };
            while let Some(k) = match gw.mobility_mut() {
                Some(Mobility::MobileNode(mn)) => mn.poll_key_management(),
                Some(Mobility::HomeAgent(ha)) => ha.poll_key_management(),
                None => None,
            } {
                let _ = tx.send(k);
            }
        }));
    }
}

fn v6(a: &[u8; 16]) -> String {
    Ipv6Addr::from(*a).to_string()
}

fn v4(a: &[u8; 4]) -> String {
    Ipv4Addr::from(*a).to_string()
}

/// The bindings as JSON: the home agent's binding cache, or the mobile
/// node's registration.
pub fn bindings_json(m: &Mobility, now: Timestamp) -> Value {
    match m {
        Mobility::HomeAgent(ha) => {
            let list: Vec<Value> = ha
                .bindings()
                .iter()
                .map(|b| {
                    let (care_of, udp) = match b.care_of {
                        CareOf::V6(a) => (v6(&a), None),
                        CareOf::V4 { addr, udp, use_udp } => (
                            v4(&addr),
                            use_udp.then(|| format!("{}:{}", v4(&udp.addr), udp.port)),
                        ),
                    };
                    json!({
                        "home": v6(&b.home),
                        "home_v4": b.home_v4.as_ref().map(v4),
                        "care_of": care_of,
                        "nat": b.nat,
                        "udp": udp,
                        "seq": b.seq,
                        "lifetime_secs": b.lifetime.as_secs(),
                        "expires_in_secs": b.expires.saturating_since(now).as_secs(),
                    })
                })
                .collect();
            json!({"role": "ha", "address": v6(&ha.config().address), "bindings": list})
        }
        Mobility::MobileNode(mn) => {
            let cfg = mn.config();
            json!({
                "role": "mn",
                "home_address": v6(&cfg.home),
                "home_agent": v6(&cfg.home_agent),
                "attachment": mn.attachment().to_string(),
                "registered": mn.registered().map(|a| a.to_string()),
                "registering": mn.registering().map(|a| a.to_string()),
                "nat": mn.behind_nat(),
                "home_v4": mn.home_v4().as_ref().map(v4),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitsgw_mobility::mn::MnConfig;

    fn mn_settings(attachment: Option<Attachment>) -> MobilitySettings {
        let mut config = MnConfig::new(
            "2001:db8:1::100".parse::<Ipv6Addr>().unwrap().octets(),
            "2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        config.home_agent_v4 = Some([203, 0, 113, 1]);
        MobilitySettings::MobileNode { config, attachment }
    }

    #[test]
    fn an_initial_attachment_starts_a_registration() {
        let coa = "2001:db8:2::100".parse::<Ipv6Addr>().unwrap().octets();
        let m = build(&mn_settings(Some(Attachment::V6(coa))), Timestamp::ZERO);
        let v = bindings_json(&m, Timestamp::ZERO);
        assert_eq!(v["registering"], "2001:db8:2::100");
        assert_eq!(v["registered"], Value::Null);
        assert_eq!(v["attachment"], "2001:db8:2::100");
        let m = build(&mn_settings(None), Timestamp::ZERO);
        let v = bindings_json(&m, Timestamp::ZERO);
        assert_eq!(v["attachment"], "home");
        assert_eq!(v["registering"], Value::Null);
    }

    /// Addresses the home agent can not reach the mobile node at are
    /// refused as care-of addresses, each with a reason.
    #[test]
    fn unreachable_care_of_addresses_are_refused() {
        let MobilitySettings::MobileNode { config, .. } = mn_settings(None) else {
            unreachable!()
        };
        for (text, why) in [
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("169.254.1.1", "link-local"),
            ("::ffff:203.0.113.5", "IPv4-mapped"),
            ("::", "not a unicast"),
            ("::1", "not a unicast"),
            ("ff02::1", "not a unicast"),
            ("0.0.0.0", "not a unicast"),
            ("127.0.0.1", "not a unicast"),
            ("224.0.0.1", "not a unicast"),
            ("255.255.255.255", "not a unicast"),
        ] {
            let e = parse_attachment(&config, text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
        assert_eq!(
            parse_attachment(&config, "2001:db8:2::100"),
            Ok(Attachment::V6(
                "2001:db8:2::100".parse::<Ipv6Addr>().unwrap().octets()
            ))
        );
        assert_eq!(
            parse_attachment(&config, "203.0.113.5"),
            Ok(Attachment::V4([203, 0, 113, 5]))
        );
    }
}
