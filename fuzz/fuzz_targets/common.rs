//! Policy pairs built inline for the fuzz targets: gateway A protects
//! traffic from 192.0.2.0/24 (or 2001:db8:a::/48) to 198.51.100.0/24 (or
//! 2001:db8:b::/48) and gateway B takes it in.
#![allow(dead_code)]

use bitsgw_ipsec::config::{parse_policy, PolicySet};
use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId};
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_wire::{ip, Timestamp};
use std::sync::OnceLock;

pub const T0: Timestamp = Timestamp::ZERO;
/// The SPI of A's outbound SA, which is B's inbound SA.
pub const SPI_A_TO_B: u32 = 0x1001;

/// One configuration the input can pick.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub transform: TransformId,
    pub tunnel: bool,
    pub v6: bool,
    pub encap: Option<(u16, u16)>,
    pub esn: bool,
}

pub fn shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for (i, transform) in TransformId::ALL.into_iter().enumerate() {
        for (tunnel, v6, encap) in [
            (true, false, None),
            (true, true, Some((4500, 4500))),
            (false, false, Some((4501, 14500))),
            (false, true, None),
        ] {
            out.push(Shape {
                transform,
                tunnel,
                v6,
                encap,
                esn: i % 2 == 1,
            });
        }
    }
    out
}

pub fn enc_key(t: TransformId) -> Vec<u8> {
    vec![0x11; t.enc_key_len()]
}

pub fn auth_key(t: TransformId) -> Vec<u8> {
    vec![0x22; t.auth_key_len()]
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl Shape {
    /// (A, B) outer addresses.
    pub fn outer(&self) -> (&'static str, &'static str) {
        if self.v6 {
            ("2001:db8:ffff::a", "2001:db8:ffff::b")
        } else {
            ("203.0.113.1", "203.0.113.2")
        }
    }

    /// (A, B) inner addresses or networks.
    fn selectors(&self) -> (&'static str, &'static str) {
        match (self.tunnel, self.v6) {
            (true, false) => ("192.0.2.0/24", "198.51.100.0/24"),
            (true, true) => ("2001:db8:a::/48", "2001:db8:b::/48"),
            (false, _) => self.outer(),
        }
    }

    pub fn policy(&self, a: bool) -> String {
        let (oa, ob) = self.outer();
        let (sa, sb) = self.selectors();
        let (me, peer, sel_me, sel_peer) = if a {
            (oa, ob, sa, sb)
        } else {
            (ob, oa, sb, sa)
        };
        let (spi_out, spi_in) = if a {
            (0x1001, 0x2002)
        } else {
            (0x2002, 0x1001)
        };
        let mode = if self.tunnel {
            format!(r#""mode": "tunnel", "tunnel": {{"local": "{me}", "remote": "{peer}"}},"#)
        } else {
            r#""mode": "transport","#.to_string()
        };
        let encap = match self.encap {
            Some((pa, pb)) => {
                let (l, r) = if a { (pa, pb) } else { (pb, pa) };
                format!(r#""udp_encap": {{"local_port": {l}, "remote_port": {r}}},"#)
            }
            None => String::new(),
        };
        let t = self.transform;
        // A to B has the keys `sealed` builds authentic packets with; B to
        // A keys of its own (one key on two SAs is refused): the same
        // bytes, each one's low bit flipped.
        let flipped = |k: Vec<u8>| k.into_iter().map(|b| b ^ 1).collect::<Vec<u8>>();
        let sa = |name: &str, dir: &str, spi: u32| {
            let a_to_b = a == (dir == "outbound");
            let (enc, auth) = if a_to_b {
                (enc_key(t), auth_key(t))
            } else {
                (flipped(enc_key(t)), flipped(auth_key(t)))
            };
            let auth = if t.auth_key_len() > 0 {
                format!(r#""auth_key": "{}","#, hex(&auth))
            } else {
                String::new()
            };
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, {mode} {encap} {auth}
                   "transform": "{}", "enc_key": "{}", "esn": {}, "replay_window": 64}}"#,
                t.name(),
                hex(&enc),
                self.esn
            )
        };
        format!(
            r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{
                 "outbound": [
                   {{"name": "ike", "proto": "udp", "local_port": 500, "action": "bypass"}},
                   {{"name": "p", "local": "{sel_me}", "remote": "{sel_peer}", "action": "protect", "sa": "out"}}],
                 "inbound": [
                   {{"name": "ike", "proto": "udp", "local_port": 500, "action": "bypass"}},
                   {{"name": "p", "local": "{sel_me}", "remote": "{sel_peer}", "action": "protect", "sa": "in"}}]}},
               "sad": [{}, {}]}}"#,
            sa("out", "outbound", spi_out),
            sa("in", "inbound", spi_in)
        )
    }

    pub fn config(&self) -> StageConfig {
        let mut cfg = StageConfig::default();
        if let Some((pa, pb)) = self.encap {
            cfg.udp_encap_ports.extend([pa, pb]);
        }
        cfg
    }

    /// Seals `body` (payload, padding, pad length, next header) into an
    /// authentic ESP packet for B's inbound SA, wrapped as the SA expects.
    pub fn sealed(&self, seq: u32, body: &[u8]) -> Vec<u8> {
        let t = self.transform;
        let mut esp = Vec::new();
        esp.extend_from_slice(&SPI_A_TO_B.to_be_bytes());
        esp.extend_from_slice(&seq.to_be_bytes());
        esp.resize(esp.len() + t.iv_len(), 0);
        esp.extend_from_slice(body);
        esp.resize(esp.len() + t.icv_len(), 0);
        if let Ok(tr) = Transform::new(t, GcmBackend::RustCrypto, &enc_key(t), &auth_key(t)) {
            let _ = tr.seal(&mut esp, u64::from(seq), self.esn);
        }
        let (proto, payload) = match self.encap {
            Some((pa, pb)) => {
                let mut udp = Vec::with_capacity(8 + esp.len());
                udp.extend_from_slice(&pa.to_be_bytes());
                udp.extend_from_slice(&pb.to_be_bytes());
                udp.extend_from_slice(&((8 + esp.len()) as u16).to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                udp.extend_from_slice(&esp);
                (17, udp)
            }
            None => (50, esp),
        };
        let (oa, ob) = self.outer();
        ip_packet(oa, ob, proto, &payload)
    }
}

/// A bare IP packet (no options or extension headers; checksums of the
/// upper layer not filled).
pub fn ip_packet(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    let src: std::net::IpAddr = src
        .parse()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let dst: std::net::IpAddr = dst
        .parse()
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut p = Vec::with_capacity(40 + payload.len());
    match (src, dst) {
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            let mut h = [0u8; 40];
            ip::emit_ipv6_header(
                &mut h,
                s.octets(),
                d.octets(),
                proto,
                payload.len() as u16,
                64,
                0,
            );
            p.extend_from_slice(&h);
        }
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            let mut h = [0u8; 20];
            let len = (20 + payload.len()).min(65535) as u16;
            ip::emit_ipv4_header(&mut h, s.octets(), d.octets(), proto, len, 64, 1, 0, false);
            p.extend_from_slice(&h);
        }
        _ => {}
    }
    p.extend_from_slice(payload);
    p
}

struct Sets {
    shapes: Vec<Shape>,
    a: Vec<PolicySet>,
    b: Vec<PolicySet>,
}

fn sets() -> &'static Sets {
    static S: OnceLock<Sets> = OnceLock::new();
    S.get_or_init(|| {
        let shapes = shapes();
        let parse = |s: &Shape, a: bool| {
            parse_policy(&s.policy(a), "fuzz.json").unwrap_or_else(|e| panic!("{e}"))
        };
        Sets {
            a: shapes.iter().map(|s| parse(s, true)).collect(),
            b: shapes.iter().map(|s| parse(s, false)).collect(),
            shapes,
        }
    })
}

/// The shape chosen by `pick` and a fresh stage of side A (`a`) or B.
pub fn stage(pick: u8, a: bool) -> (Shape, IpsecStage) {
    let s = sets();
    let i = usize::from(pick) % s.shapes.len();
    let shape = s.shapes[i];
    let mut stage = IpsecStage::new(shape.config());
    let set = if a { &s.a[i] } else { &s.b[i] };
    set.apply(&mut stage, T0).unwrap_or_else(|e| panic!("{e}"));
    (shape, stage)
}

/// The shape chosen by `pick` and fresh stages A and B for it.
pub fn pair(pick: u8) -> (Shape, IpsecStage, IpsecStage) {
    let (shape, a) = stage(pick, true);
    let (_, b) = stage(pick, false);
    (shape, a, b)
}

/// Checks the counter contract of one stage call: a drop is counted once
/// under the reason returned, and nothing else is.
pub fn check_drop(
    before: &bitsgw_ipsec::counters::StageCounters,
    after: &bitsgw_ipsec::counters::StageCounters,
    d: bitsgw_ipsec::Disposition,
) {
    use bitsgw_ipsec::{Disposition, DropReason};
    for r in DropReason::ALL {
        let delta = after.drops(*r) - before.drops(*r);
        let want = match d {
            Disposition::Drop(x) if x == *r => 1,
            Disposition::IcmpError if *r == DropReason::TooBig => 1,
            _ => 0,
        };
        assert_eq!(delta, want, "{r:?} after {d:?}");
    }
}
