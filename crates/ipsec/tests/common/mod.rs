//! Shared helpers for the IPsec stage's integration tests: policy pairs and
//! packet builders.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

use bitsgw_ipsec::config::{parse_policy, PolicySet};
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_wire::Timestamp;
use std::net::IpAddr;

pub const KEY_ENC: &str =
    "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0a0b0c0d";
pub const KEY_AUTH: &str = "0xfedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// Options for a pair of gateways A and B protecting traffic between them.
#[derive(Debug, Clone)]
pub struct PairSpec {
    pub transform: &'static str,
    pub tunnel: bool,
    pub inner_v6: bool,
    pub outer_v6: bool,
    pub udp_encap: Option<(u16, u16)>,
    pub esn: bool,
    pub replay_window: u32,
    pub lifetime: &'static str,
    pub backend: &'static str,
}

impl Default for PairSpec {
    fn default() -> Self {
        PairSpec {
            transform: "aes-gcm-128",
            tunnel: true,
            inner_v6: false,
            outer_v6: false,
            udp_encap: None,
            esn: false,
            replay_window: 64,
            lifetime: "",
            backend: "rustcrypto",
        }
    }
}

pub fn key_for(transform: &str, which: &str) -> String {
    let t = bitsgw_ipsec::crypto::TransformId::from_name(transform).unwrap();
    let (src, len) = match which {
        "enc" => (KEY_ENC, t.enc_key_len()),
        _ => (KEY_AUTH, t.auth_key_len()),
    };
    format!("0x{}", &src[2..2 + 2 * len])
}

impl PairSpec {
    /// Inner host addresses behind A and B.
    pub fn inner(&self) -> (IpAddr, IpAddr) {
        if !self.tunnel {
            return self.outer();
        }
        if self.inner_v6 {
            (
                "2001:db8:a::1".parse().unwrap(),
                "2001:db8:b::1".parse().unwrap(),
            )
        } else {
            (
                "192.0.2.1".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
            )
        }
    }

    /// Tunnel endpoints (or transport endpoints).
    pub fn outer(&self) -> (IpAddr, IpAddr) {
        let v6 = if self.tunnel {
            self.outer_v6
        } else {
            self.inner_v6
        };
        if v6 {
            (
                "2001:db8:ffff::a".parse().unwrap(),
                "2001:db8:ffff::b".parse().unwrap(),
            )
        } else {
            (
                "203.0.113.1".parse().unwrap(),
                "203.0.113.2".parse().unwrap(),
            )
        }
    }

    /// The policy file of side A (`a == true`) or B.
    pub fn policy(&self, a: bool) -> String {
        let (ia, ib) = self.inner();
        let (oa, ob) = self.outer();
        let (me_in, peer_in, me_out, peer_out) = if a {
            (ia, ib, oa, ob)
        } else {
            (ib, ia, ob, oa)
        };
        let (spi_out, spi_in) = if a {
            (0x1001, 0x2002)
        } else {
            (0x2002, 0x1001)
        };
        let (sel_local, sel_remote) = if self.tunnel {
            let p = if self.inner_v6 { 48 } else { 24 };
            (format!("{me_in}/{p}"), format!("{peer_in}/{p}"))
        } else {
            (me_in.to_string(), peer_in.to_string())
        };
        let mode = if self.tunnel {
            format!(
                r#""mode": "tunnel", "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}},"#
            )
        } else {
            r#""mode": "transport","#.to_string()
        };
        let encap = match self.udp_encap {
            Some((pa, pb)) => {
                let (l, r) = if a { (pa, pb) } else { (pb, pa) };
                format!(r#""udp_encap": {{"local_port": {l}, "remote_port": {r}}},"#)
            }
            None => String::new(),
        };
        // Each direction has keys of its own (one key on two SAs is
        // refused): the B-to-A keys differ from the A-to-B ones in one octet.
        let key = |which: &str, a_to_b: bool| {
            let k = key_for(self.transform, which);
            if a_to_b || k.len() < 14 {
                k
            } else {
                format!("{}5a{}", &k[..12], &k[14..])
            }
        };
        let lifetime = if self.lifetime.is_empty() {
            String::new()
        } else {
            format!(r#""lifetime": {},"#, self.lifetime)
        };
        let sa = |name: &str, dir: &str, spi: u32| {
            let a_to_b = a == (dir == "outbound");
            let auth = if self.transform.contains("hmac") {
                format!(r#""auth_key": "{}","#, key("auth", a_to_b))
            } else {
                String::new()
            };
            let enc = key("enc", a_to_b);
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, {mode} {encap} {auth} {lifetime}
                  "transform": "{t}", "enc_key": "{enc}", "esn": {esn}, "replay_window": {w}, "backend": "{b}"}}"#,
                t = self.transform,
                esn = self.esn,
                w = self.replay_window,
                b = self.backend,
            )
        };
        format!(
            r#"{{
  "danger_static_keys_for_counter_mode": true,
  "spd": {{
    "outbound": [
      {{"name": "ike", "proto": "udp", "local_port": 500, "action": "bypass"}},
      {{"name": "to-peer", "local": "{sel_local}", "remote": "{sel_remote}", "action": "protect", "sa": "out"}}
    ],
    "inbound": [
      {{"name": "ike", "proto": "udp", "local_port": 500, "action": "bypass"}},
      {{"name": "from-peer", "local": "{sel_local}", "remote": "{sel_remote}", "action": "protect", "sa": "in"}}
    ]
  }},
  "sad": [{}, {}]
}}"#,
            sa("out", "outbound", spi_out),
            sa("in", "inbound", spi_in)
        )
    }

    pub fn stages(&self) -> (IpsecStage, IpsecStage) {
        (self.stage(true), self.stage(false))
    }

    pub fn stage(&self, a: bool) -> IpsecStage {
        let text = self.policy(a);
        let set = parse_policy(&text, if a { "a.json" } else { "b.json" })
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut cfg = StageConfig::default();
        if let Some((pa, pb)) = self.udp_encap {
            cfg.udp_encap_ports.extend([pa, pb]);
        }
        let mut stage = IpsecStage::new(cfg);
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        stage
    }
}

pub use bitsgw_wire::craft::{ip_packet, udp_packet};

/// Every transform name.
pub fn transforms() -> Vec<&'static str> {
    bitsgw_ipsec::crypto::TransformId::ALL
        .iter()
        .map(|t| t.name())
        .collect()
}

/// Reads and parses a policy file (the IPsec crate parses text only).
pub fn policy_file(path: &std::path::Path) -> PolicySet {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_policy(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}
