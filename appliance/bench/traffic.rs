//! The bench's traffic: the policies of both gateways (one SA pair per
//! flow), the stages built from them, and the prebuilt frames the
//! generating port hands the pipeline.

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_wire::craft::udp_packet;
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::{IpAddr, Ipv4Addr};

use super::*;

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub(super) fn host_a(flow: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + flow as u8)
}

pub(super) fn host_b(flow: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + flow as u8)
}

/// The policy of gateway A (`a`) or its peer B: `flows` host pairs, each
/// protected by its own SA pair. Outbound SAs come first in the SAD, so
/// the SAs of one direction spread over the workers (a frame goes to the
/// worker `SA index % workers`).
pub(super) fn policy(a: bool, t: TransformId, mode: BenchMode, flows: usize) -> String {
    // Each SA has keys of its own (one key on two SAs is refused): the
    // bench key with the SPI in its first octets, the same on both sides.
    let key_for = |spi: usize, len: usize| {
        let mut k = KEY;
        k[..4].copy_from_slice(&(spi as u32).to_be_bytes());
        hex(&k[..len])
    };
    let (me_out, peer_out) = if a {
        (OUTER_A, OUTER_B)
    } else {
        (OUTER_B, OUTER_A)
    };
    let tunnel = match mode {
        BenchMode::Tunnel => {
            format!(
                r#""mode": "tunnel", "tunnel": {{"local": "{me_out}", "remote": "{peer_out}"}},"#
            )
        }
        BenchMode::Transport => r#""mode": "transport","#.to_string(),
    };
    let mut out = Vec::new();
    let mut inb = Vec::new();
    let mut sad_out = Vec::new();
    let mut sad_in = Vec::new();
    for f in 0..flows {
        let (me, peer) = if a {
            (host_a(f), host_b(f))
        } else {
            (host_b(f), host_a(f))
        };
        // A's SPIs 0x1000 + f outbound, 0x2000 + f inbound; B mirrored.
        let (spi_out, spi_in) = if a {
            (0x1000 + f, 0x2000 + f)
        } else {
            (0x2000 + f, 0x1000 + f)
        };
        out.push(format!(
            r#"{{"name": "out-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-out-{f}"}}"#
        ));
        inb.push(format!(
            r#"{{"name": "in-{f}", "local": "{me}/32", "remote": "{peer}/32", "action": "protect", "sa": "sa-in-{f}"}}"#
        ));
        let sa = |name: String, dir: &str, spi: usize| {
            let enc = key_for(spi, t.enc_key_len());
            let auth = match t.auth_key_len() {
                0 => String::new(),
                n => format!(r#""auth_key": "{}","#, key_for(spi, n)),
            };
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, {tunnel} {auth}
                    "transform": "{t}", "enc_key": "{enc}", "replay_window": 0}}"#,
                t = t.name()
            )
        };
        sad_out.push(sa(format!("sa-out-{f}"), "outbound", spi_out));
        sad_in.push(sa(format!("sa-in-{f}"), "inbound", spi_in));
    }
    sad_out.extend(sad_in);
    format!(
        r#"{{"danger_static_keys_for_counter_mode": true, "spd": {{"outbound": [{}], "inbound": [{}]}}, "sad": [{}]}}"#,
        out.join(","),
        inb.join(","),
        sad_out.join(",")
    )
}

/// The backends `auto` SAs use here, measured once per process as `run`
/// measures them.
pub(super) fn gcm_preference() -> bitsgw_ipsec::gcm_choice::GcmPreference {
    static MEASURED: std::sync::OnceLock<bitsgw_ipsec::gcm_choice::GcmPreference> =
        std::sync::OnceLock::new();
    *MEASURED.get_or_init(|| {
        let c = crate::gcm_calibration::calibrate();
        tracing::info!(measured = %c.summary(), "AES-GCM backend for the pipeline's SAs");
        c.preference
    })
}

pub(super) fn stage(text: &str) -> Result<IpsecStage, String> {
    let set = parse_policy(text, "bench").map_err(|e| e.to_string())?;
    let mut stage = IpsecStage::new(StageConfig {
        mtu: 9000,
        gcm: gcm_preference(),
        ..StageConfig::default()
    });
    set.apply(&mut stage, Timestamp::ZERO)
        .map_err(|e| e.to_string())?;
    Ok(stage)
}

pub(super) fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// The frames the generator cycles through, and the byte count of each
/// packet (inner IPv4 packet) for goodput.
pub(super) fn frames(
    t: TransformId,
    mode: BenchMode,
    dir: Dir,
    size: Size,
    flows: usize,
) -> Result<Vec<(Vec<u8>, usize)>, String> {
    let mut peer = match dir {
        Dir::Encrypt => None,
        Dir::Decrypt => Some(stage(&policy(false, t, mode, flows))?),
    };
    let mut v = Vec::new();
    // Packet i: flow i % flows, size pattern[(i / flows) % len].
    for len in size.pattern() {
        for f in 0..flows {
            let (src, dst) = match dir {
                Dir::Encrypt => (host_a(f), host_b(f)),
                Dir::Decrypt => (host_b(f), host_a(f)),
            };
            let ip = udp_packet(IpAddr::V4(src), IpAddr::V4(dst), 4000, 5000, len - 28);
            let wire = match peer.as_mut() {
                None => ip,
                Some(p) => {
                    let mut buf = PacketBuf::from_slice(&ip);
                    match p.handle_outbound(&mut buf, Timestamp::ZERO) {
                        Disposition::Forward => buf.data().to_vec(),
                        other => return Err(format!("the peer did not seal: {other:?}")),
                    }
                }
            };
            v.push((eth(&wire), len));
        }
    }
    Ok(v)
}
