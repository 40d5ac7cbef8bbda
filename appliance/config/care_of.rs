//! IKE in the mobility roles: a mobile node's peer that runs from its
//! care-of address (`"local": "care-of"`), and the addresses IKE runs on
//! in each role.
//!
//! RFC 4877 4.4: the mobile node's IKE runs between its current care-of
//! address and the home agent's address, outside the tunnel; its
//! CHILD_SAs are bound to the home address, so they survive movement. A
//! care-of peer's `remote` is the home agent's address
//! (`mobility.home_agent`); from an IPv4 care-of address (RFC 5555) IKE
//! runs to `mobility.home_agent_v4` instead, through a NAT on UDP 4500 if
//! there is one (RFC 7296 2.23). Every care-of address IKE may run from
//! must be one of the appliance's network addresses (`addresses.network`,
//! on the TUN port too): the appliance's own host stack answers there.
//! At home the node has no care-of address: a care-of peer waits for the
//! next movement.
//!
//! The home agent's IKE runs on its own addresses (`mobility.address`,
//! `mobility.address_v4`), which on a TUN network port are the
//! appliance's network addresses without being listed.

use super::*;

/// Where a mobile node's care-of peer runs IKE: to the home agent's
/// address of the care-of address's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CareOfPeer {
    /// The home agent's IPv6 address.
    pub home_agent: IpAddr,
    /// The home agent's IPv4 address, for IPv4 care-of addresses.
    pub home_agent_v4: Option<IpAddr>,
}

impl CareOfPeer {
    /// The (local, remote) addresses of IKE from `care_of`; none at home
    /// or when the home agent has no address of its family.
    pub fn addresses(&self, care_of: Option<IpAddr>) -> Option<(IpAddr, IpAddr)> {
        match care_of? {
            c @ IpAddr::V6(_) => Some((c, self.home_agent)),
            c @ IpAddr::V4(_) => self.home_agent_v4.map(|ha| (c, ha)),
        }
    }
}

/// The care-of address of an attachment, none at home.
pub fn care_of_address(a: Attachment) -> Option<IpAddr> {
    match a {
        Attachment::Home => None,
        Attachment::V6(c) => Some(IpAddr::from(c)),
        Attachment::V4(c) => Some(IpAddr::from(c)),
    }
}

/// Whether IKE can run from `care_of`: one of the network addresses.
pub fn check_care_of(network: &OwnAddresses, care_of: IpAddr) -> Result<(), String> {
    if network.addresses.iter().any(|(a, _)| *a == care_of) {
        Ok(())
    } else {
        Err(format!(
            "IKE runs from the care-of address, and {care_of} is not one of the appliance's network addresses (addresses.network)"
        ))
    }
}

/// A peer with `"local": "care-of"`: its addresses now (from the initial
/// attachment; the unspecified address at home) and where it runs.
pub(super) fn care_of_peer(
    ctx: &Ctx<'_>,
    remote: IpAddr,
    mobility: Option<&MobilitySettings>,
    network: &OwnAddresses,
) -> Result<(IpAddr, IpAddr, CareOfPeer), ConfigError> {
    let Some(MobilitySettings::MobileNode { config, attachment }) = mobility else {
        return Err(ctx.err(
            "local",
            "\"care-of\" is for the mn role (IKE from the mobile node's care-of address)",
        ));
    };
    let peer = CareOfPeer {
        home_agent: IpAddr::from(config.home_agent),
        home_agent_v4: config.home_agent_v4.map(IpAddr::from),
    };
    if remote != peer.home_agent {
        return Err(ctx.err(
            "remote",
            format!(
                "{remote}: a care-of peer's remote is the home agent's address (mobility.home_agent, {})",
                peer.home_agent
            ),
        ));
    }
    let care_of = attachment.and_then(care_of_address);
    if let Some(c) = care_of {
        check_care_of(network, c)
            .map_err(|e| ctx.err("local", format!("mobility.attachment: {e}")))?;
    }
    let (local, remote) = peer
        .addresses(care_of)
        .unwrap_or((IpAddr::V6(Ipv6Addr::UNSPECIFIED), peer.home_agent));
    Ok((local, remote, peer))
}

/// On a TUN network port, the home agent's own addresses are the
/// appliance's network addresses (its host stack answers IKE there).
pub(super) fn home_agent_addresses(
    network: &mut OwnAddresses,
    port: &PortConfig,
    mobility: Option<&MobilitySettings>,
) {
    let (PortConfig::Tun { .. }, Some(MobilitySettings::HomeAgent(ha))) = (port, mobility) else {
        return;
    };
    let own = [
        Some((IpAddr::from(ha.address), 128)),
        ha.address_v4.map(|a| (IpAddr::from(a), 32)),
    ];
    for (a, len) in own.into_iter().flatten() {
        if !network.addresses.iter().any(|(x, _)| *x == a) {
            network.addresses.push((a, len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt as _;

    const POLICY: &str = r#"{
      "addresses": {"home_address_1": "2001:db8:1::100", "home_agent_1": "2001:db8:1::1"},
      "spd": {
        "outbound": [{"name": "o", "local": "home_address_1", "action": "protect", "sa": "out"}],
        "inbound": [{"name": "i", "local": "home_address_1", "action": "protect", "sa": "in"}]},
      "sad": [
        {"name": "out", "direction": "outbound", "keyed_by": "ike", "tunnel": {"local": "home_address_1", "remote": "home_agent_1"}},
        {"name": "in", "direction": "inbound", "keyed_by": "ike", "tunnel": {"local": "home_address_1", "remote": "home_agent_1"}}]}"#;

    /// No SA keyed by IKE.
    const STATIC_POLICY: &str = r#"{
      "addresses": {"home_address_1": "2001:db8:1::100", "home_agent_1": "2001:db8:1::1"},
      "spd": {
        "outbound": [{"name": "d", "action": "discard"}],
        "inbound": [{"name": "d", "action": "discard"}]}, "sad": []}"#;

    /// A mobile node's configuration on TUN ports with one care-of peer,
    /// in a directory of its own; `change` edits it first.
    fn mn(tag: &str, change: impl FnOnce(&mut Value)) -> Result<ApplianceConfig, ConfigError> {
        let dir = std::env::temp_dir().join(format!("bitsgw-care-of-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.json"), POLICY).unwrap();
        std::fs::write(dir.join("static.json"), STATIC_POLICY).unwrap();
        let psk = dir.join("k.psk");
        std::fs::write(&psk, "a sixteen-octet or longer key\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut v = json!({
            "role": "mn", "policy": "p.json",
            "ports": {"host": {"type": "tun", "name": "mnh"}, "network": {"type": "tun", "name": "mnn"}},
            "addresses": {"network": ["2001:db8:2::100/64", "203.0.113.70/26"]},
            "mobility": {"home_address": "home_address_1", "home_agent": "home_agent_1",
                "home_agent_v4": "203.0.113.1", "attachment": "2001:db8:2::100"},
            "peers": [{"name": "ha", "local": "care-of", "remote": "home_agent_1",
                "local_id": "fqdn:mn.example", "remote_id": "fqdn:ha.example", "psk_file": "k.psk",
                "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
                "start": "initiate", "children": [{"outbound": "out", "inbound": "in"}]}]
        });
        change(&mut v);
        let r = parse(&v.to_string(), &dir.join("c.json"));
        std::fs::remove_dir_all(dir).unwrap();
        r
    }

    fn error(tag: &str, change: impl FnOnce(&mut Value)) -> (String, String, String) {
        let e = mn(tag, change).unwrap_err();
        assert!(e.file.ends_with("c.json"), "{e}");
        (e.entry, e.field, e.problem)
    }

    #[test]
    fn a_care_of_peer_runs_from_the_attachment_to_the_home_agent_of_its_family() {
        let cfg = mn("ok", |_| {}).unwrap();
        let p = &cfg.peers[0];
        assert_eq!(
            (p.local, p.remote),
            (ip("2001:db8:2::100"), Some(ip("2001:db8:1::1")))
        );
        let c = p.care_of.unwrap();
        assert_eq!(
            c.addresses(Some(ip("203.0.113.70"))),
            Some((ip("203.0.113.70"), ip("203.0.113.1")))
        );
        assert_eq!(c.addresses(None), None, "nothing at home");
        let cfg = mn("v4", |v| {
            v["mobility"]["attachment"] = json!("203.0.113.70")
        })
        .unwrap();
        let p = &cfg.peers[0];
        assert_eq!(
            (p.local, p.remote),
            (ip("203.0.113.70"), Some(ip("203.0.113.1")))
        );
        let cfg = mn("home", |v| {
            v["mobility"].as_object_mut().unwrap().remove("attachment");
        })
        .unwrap();
        assert!(
            cfg.peers[0].local.is_unspecified(),
            "waits for a care-of address"
        );
    }

    #[test]
    fn care_of_settings_are_refused_naming_file_entry_and_field() {
        let peer = "peers[0] \"ha\"".to_string();
        let (entry, field, problem) = error("not-own", |v| {
            v["mobility"]["attachment"] = json!("2001:db8:3::100");
        });
        assert_eq!((entry.as_str(), field.as_str()), (peer.as_str(), "local"));
        assert!(
            problem.contains("2001:db8:3::100") && problem.contains("addresses.network"),
            "{problem}"
        );
        let (entry, field, problem) = error("remote", |v| {
            v["peers"][0]["remote"] = json!("2001:db8:1::9");
        });
        assert_eq!((entry.as_str(), field.as_str()), (peer.as_str(), "remote"));
        assert!(problem.contains("mobility.home_agent"), "{problem}");
        let (_, field, _) = error("port", |v| v["mobility"]["udp_port"] = json!(4500));
        assert_eq!(field, "mobility.udp_port");
        let (_, field, problem) = error("k", |v| {
            v["mobility"]["key_management_mobility"] = json!(true);
            v.as_object_mut().unwrap().remove("peers");
            v["policy"] = json!("static.json");
        });
        assert_eq!(field, "mobility.key_management_mobility", "{problem}");
        let (_, field, problem) = error("k-fixed", |v| {
            v["mobility"]["key_management_mobility"] = json!(true);
            v["peers"][0]["local"] = json!("2001:db8:2::100");
        });
        assert_eq!(field, "mobility.key_management_mobility", "{problem}");
        assert!(problem.contains("care-of"), "{problem}");
        assert!(mn("k-care-of", |v| {
            v["mobility"]["key_management_mobility"] = json!(true);
        })
        .is_ok());
        let (_, field, _) = error("mac", |v| {
            v["addresses"]["network_mac"] = json!("02:00:00:00:00:01");
        });
        assert_eq!(field, "addresses.network_mac");
    }

    /// The IKE thread with a mobile node's care-of peer: at home it
    /// initiates nothing; each movement (`ctl move`) has it initiate from
    /// the new care-of address to the home agent's address of its family;
    /// back home it stays where it was.
    #[test]
    fn the_ike_thread_initiates_from_each_care_of_address_the_node_moves_to() {
        use crate::ike::{IkeCommand, MobilityChange};
        use bitsgw_io::smoltcp_endpoint::{IkeDatagram, IkePort};
        use std::sync::mpsc::sync_channel;
        let cfg = mn("thread", |v| {
            v["mobility"].as_object_mut().unwrap().remove("attachment");
        })
        .unwrap();
        let (_to_ike, received) = sync_channel::<IkeDatagram>(8);
        let (send, sent) = sync_channel(8);
        let port = IkePort {
            received,
            send,
            drops: Default::default(),
        };
        let ike = crate::ike::start(&cfg, port, &Default::default()).unwrap();
        let wait = std::time::Duration::from_millis(300);
        assert!(sent.recv_timeout(wait).is_err(), "nothing at home");
        let moved = |to: Option<&str>| {
            ike.command(IkeCommand::Mobility(MobilityChange::MovedTo(to.map(ip))))
        };
        for (care_of, ha) in [
            ("2001:db8:2::100", "2001:db8:1::1"),
            ("203.0.113.70", "203.0.113.1"),
        ] {
            let answer = moved(Some(care_of));
            assert!(answer["ok"].as_str().unwrap().contains(care_of), "{answer}");
            let d = sent
                .recv_timeout(std::time::Duration::from_secs(2))
                .unwrap();
            assert_eq!((d.local.ip(), d.remote.ip()), (ip(care_of), ip(ha)));
            assert_eq!((d.local.port(), d.remote.port()), (500, 500));
        }
        let answer = moved(None);
        assert_eq!(answer["ok"], "no IKE peer follows this movement");
        let status = ike.status();
        assert_eq!(status["peers"][0]["local"], "203.0.113.70", "{status}");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
}
