//! `bitsgw check`: validate a policy file and show what it resolves to,
//! the way `ip xfrm policy` / `ip xfrm state` would, with keys masked.

use crate::config::{load_policy_file, ApplianceConfig, MobilitySettings, PortConfig};
use bitsgw_ipsec::config::{ConfigError, PolicySet};
use bitsgw_ipsec::sa::{Limits, Mode, SaParams};
use bitsgw_mobility::mn::Attachment;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// Validates `file` (an appliance configuration, or a policy file alone)
/// and renders it as text or JSON.
pub fn run(file: &Path, as_json: bool) -> Result<String, ConfigError> {
    appliance_without_role(file)?;
    if crate::config::is_appliance_config(file) {
        let cfg = crate::config::load(file)?;
        return Ok(if as_json {
            let v = json!({"appliance": appliance_json(&cfg), "policy": to_json(&cfg.policy)});
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        } else {
            format!("{}\n{}", appliance_text(&cfg), to_text(&cfg.policy))
        });
    }
    let set = load_policy_file(file).map_err(|mut e| {
        e.problem
            .push_str(" (the file was taken as a policy file: it has no \"role\")");
        e
    })?;
    Ok(if as_json {
        let mut s = serde_json::to_string_pretty(&to_json(&set)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        to_text(&set)
    })
}

/// Refuses a file with fields only an appliance configuration has but no
/// `role`: without one it would be read as a policy file, and the error
/// would be about a field that is fine where it is.
fn appliance_without_role(file: &Path) -> Result<(), ConfigError> {
    let Some(Value::Object(obj)) = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return Ok(());
    };
    if obj.contains_key("role") {
        return Ok(());
    }
    let appliance_only: Vec<&str> = crate::config::fields()
        .iter()
        .copied()
        .filter(|f| !POLICY_FIELDS.contains(f) && obj.contains_key(*f))
        .collect();
    if appliance_only.is_empty() {
        return Ok(());
    }
    Err(ConfigError {
        file: file.display().to_string(),
        entry: "appliance".into(),
        field: "role".into(),
        problem: format!(
            "is missing: this is an appliance configuration without \"role\" (it has {}); say \"gateway\", \"mn\" or \"ha\"",
            appliance_only
                .iter()
                .map(|f| format!("\"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The top-level fields of a policy file.
const POLICY_FIELDS: &[&str] = &["addresses", "spd", "sad", "comment"];

fn limits_text(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(s) = l.seconds {
        parts.push(format!("{s}s"));
    }
    if let Some(b) = l.bytes {
        parts.push(format!("{b} bytes"));
    }
    if let Some(p) = l.packets {
        parts.push(format!("{p} packets"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// How a key is shown: its length only.
fn masked(len: usize) -> String {
    if len == 0 {
        "none".into()
    } else {
        format!("<{len} bytes, masked>")
    }
}

fn to_text(set: &PolicySet) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "policy file {}: valid", set.file);
    if !set.addresses.is_empty() {
        let _ = writeln!(out, "\naddresses:");
        for (name, addr) in &set.addresses {
            let _ = writeln!(out, "  {name:<24} {addr}");
        }
    }
    for (dir, list) in [("outbound", &set.outbound), ("inbound", &set.inbound)] {
        let _ = writeln!(
            out,
            "\nSPD {dir} ({} entries, first match wins):",
            list.len()
        );
        for (i, e) in list.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {i:>3} {:<20} {}  => {}",
                e.name, e.selector, e.action
            );
        }
    }
    let _ = writeln!(out, "\nSAD ({} SAs):", set.sas.len() + set.ike_sas.len());
    for sa in &set.ike_sas {
        let _ = writeln!(
            out,
            "  {} {} esp {}, keyed by IKE (SPI, transform and keys negotiated)",
            sa.name,
            sa.direction.name(),
            sa.mode
        );
    }
    for sa in &set.sas {
        let _ = writeln!(
            out,
            "  {} {} spi {:#010x} esp {}",
            sa.name,
            sa.direction.name(),
            sa.spi,
            sa.mode
        );
        let _ = writeln!(
            out,
            "      {} ({}) enc_key {} auth_key {}",
            sa.transform.name(),
            sa.backend.name(),
            masked(sa.transform.enc_key_len()),
            masked(sa.transform.auth_key_len())
        );
        let encap = sa.udp_encap.map_or_else(
            || "none".to_string(),
            |u| format!("udp {} -> {}", u.local_port, u.remote_port),
        );
        let _ = writeln!(
            out,
            "      replay-window {} esn {} encap {} lifetime soft {} hard {}",
            sa.replay_window,
            if sa.esn { "on" } else { "off" },
            encap,
            limits_text(&sa.soft),
            limits_text(&sa.hard)
        );
    }
    for w in &set.warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }
    out
}

fn limits_json(l: &Limits) -> Value {
    json!({"seconds": l.seconds, "bytes": l.bytes, "packets": l.packets})
}

fn sa_json(sa: &SaParams) -> Value {
    let (mode, tunnel) = match sa.mode {
        Mode::Transport => ("transport", Value::Null),
        Mode::Tunnel { local, remote } => (
            "tunnel",
            json!({"local": local.to_string(), "remote": remote.to_string()}),
        ),
    };
    json!({
        "name": sa.name,
        "direction": sa.direction.name(),
        "spi": sa.spi,
        "mode": mode,
        "tunnel": tunnel,
        "transform": sa.transform.name(),
        "backend": sa.backend.name(),
        "enc_key": masked(sa.transform.enc_key_len()),
        "auth_key": masked(sa.transform.auth_key_len()),
        "replay_window": sa.replay_window,
        "esn": sa.esn,
        "udp_encap": sa.udp_encap.map(|u| json!({"local_port": u.local_port, "remote_port": u.remote_port})),
        "lifetime": {"soft": limits_json(&sa.soft), "hard": limits_json(&sa.hard)},
    })
}

fn to_json(set: &PolicySet) -> Value {
    let entries = |list: &[bitsgw_ipsec::config::EntryConfig]| -> Vec<Value> {
        list.iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "selector": e.selector.to_string(),
                    "action": e.action.to_string(),
                })
            })
            .collect()
    };
    json!({
        "file": set.file,
        "valid": true,
        "addresses": set.addresses.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect::<serde_json::Map<_, _>>(),
        "spd": {"outbound": entries(&set.outbound), "inbound": entries(&set.inbound)},
        "sad": set.sas.iter().map(sa_json).chain(set.ike_sas.iter().map(|sa| json!({
            "name": sa.name,
            "direction": sa.direction.name(),
            "mode": sa.mode.to_string(),
            "keyed_by": "ike",
            "replay_window": sa.replay_window,
        }))).collect::<Vec<_>>(),
        "warnings": set.warnings,
    })
}

fn port_text(p: &PortConfig) -> String {
    match p {
        PortConfig::AfPacket { interface } => format!("af_packet {interface}"),
        PortConfig::Tun { name } => format!("tun {name}"),
        PortConfig::AfXdp { interface } => format!("af_xdp {interface}"),
    }
}

/// The mobility stage's settings, resolved (named addresses replaced).
fn mobility_json(m: &MobilitySettings) -> Value {
    let v6 = |a: &[u8; 16]| Ipv6Addr::from(*a).to_string();
    let v4 = |a: &[u8; 4]| Ipv4Addr::from(*a).to_string();
    match m {
        MobilitySettings::HomeAgent(h) => json!({
            "address": v6(&h.address),
            "address_v4": h.address_v4.as_ref().map(v4),
            "home_prefixes": h.home_prefixes.iter().map(|(p, l)| format!("{}/{l}", v6(p))).collect::<Vec<_>>(),
            "nodes": h.nodes.iter().map(|n| json!({"home": v6(&n.home), "home_v4": n.home_v4.as_ref().map(v4)})).collect::<Vec<_>>(),
            "ipv4_pool": h.ipv4_pool.iter().map(v4).collect::<Vec<_>>(),
            "ipv4_prefix_len": h.ipv4_prefix_len,
            "max_lifetime_secs": h.max_lifetime.as_secs(),
            "nat_refresh_secs": h.nat_refresh.as_secs(),
            "force_udp": h.force_udp,
        }),
        MobilitySettings::MobileNode {
            config: c,
            attachment,
        } => json!({
            "home_address": v6(&c.home),
            "home_agent": v6(&c.home_agent),
            "home_agent_v4": c.home_agent_v4.as_ref().map(v4),
            "home_v4": c.home_v4.as_ref().map(v4),
            "lifetime_secs": c.lifetime.as_secs(),
            "udp_port": c.udp_port,
            "classifier": c.classifier.to_string(),
            "attachment": attachment.as_ref().map(Attachment::to_string),
        }),
    }
}

fn mobility_text(m: &MobilitySettings) -> String {
    let v = mobility_json(m);
    let mut out = String::from("  mobility:\n");
    for (k, val) in v.as_object().into_iter().flatten() {
        let shown = match val {
            Value::Null => "none".to_string(),
            Value::String(s) => s.clone(),
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        Value::Object(o) => o
                            .iter()
                            .filter(|(_, x)| !x.is_null())
                            .map(|(k, x)| format!("{k} {}", x.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(" "),
                        other => other.to_string(),
                    })
                    .collect();
                if parts.is_empty() {
                    "none".to_string()
                } else if parts.len() > 8 {
                    format!(
                        "{} .. {} ({} addresses)",
                        parts[0],
                        parts[parts.len() - 1],
                        parts.len()
                    )
                } else {
                    parts.join(", ")
                }
            }
            other => other.to_string(),
        };
        let _ = writeln!(out, "    {k:<18} {shown}");
    }
    out
}

fn appliance_text(cfg: &ApplianceConfig) -> String {
    let mobility = cfg.mobility.as_ref().map(mobility_text).unwrap_or_default();
    let mut routes = String::new();
    if let Some(r) = &cfg.routes {
        for (side, list) in [("host", &r.host), ("network", &r.network)] {
            for route in list {
                let _ = writeln!(routes, "  route {side} {}", route_text(route));
            }
        }
    }
    let (layer2, layer2_warning) = layer2_text(cfg);
    let keys_warning = wireshark_keys_warning(cfg)
        .map(|w| format!("\nwarning: {w}\n"))
        .unwrap_or_default();
    format!(
        "appliance {}: valid\n  role {}\n  mode {}\n{routes}  host port {}\n  network port {}\n  {}\n  mtu {}\n  udp encapsulation ports {:?}\n  control socket {}\n  state directory {} (sequence leases)\n  policy {}\n  layer2 {layer2}\n{mobility}{layer2_warning}{keys_warning}",
        cfg.file.display(),
        cfg.role.name(),
        cfg.mode.name(),
        port_text(&cfg.host),
        port_text(&cfg.network),
        if cfg.run_to_completion {
            "pipeline run-to-completion (one thread per port)".to_string()
        } else if cfg.queues {
            format!(
                "pipeline queues: {} (one per worker, PACKET_FANOUT; inbox {})",
                cfg.workers, cfg.queue_depth
            )
        } else {
            format!("workers {} (queue {})", cfg.workers, cfg.queue_depth)
        },
        cfg.stage.mtu,
        cfg.stage.udp_encap_ports,
        cfg.control_socket.display(),
        cfg.state_dir.display(),
        cfg.policy_file.display()
    )
}

fn appliance_json(cfg: &ApplianceConfig) -> Value {
    json!({
        "file": cfg.file.display().to_string(),
        "role": cfg.role.name(),
        "mode": cfg.mode.name(),
        "routes": cfg.routes.as_ref().map(|r| json!({
            "host": r.host.iter().map(route_text).collect::<Vec<_>>(),
            "network": r.network.iter().map(route_text).collect::<Vec<_>>(),
        })),
        "host": port_text(&cfg.host),
        "network": port_text(&cfg.network),
        "workers": cfg.workers,
        "pipeline": match (cfg.run_to_completion, cfg.queues) {
            (true, _) => "run-to-completion",
            (false, true) => "queues",
            (false, false) => "workers",
        },
        "queue_depth": cfg.queue_depth,
        "mtu": cfg.stage.mtu,
        "udp_encap_ports": cfg.stage.udp_encap_ports,
        "control_socket": cfg.control_socket.display().to_string(),
        "control_socket_group": cfg.control_socket_group,
        "state_dir": cfg.state_dir.display().to_string(),
        "metrics": cfg.metrics.map(|a| a.to_string()),
        "user": cfg.user.map(|(uid, gid)| json!({"uid": uid, "gid": gid})),
        "policy": cfg.policy_file.display().to_string(),
        "mobility": cfg.mobility.as_ref().map(mobility_json),
        "layer2": {
            "pass_unknown": cfg.layer2.pass_unknown,
            "allow": cfg.layer2.allow.iter().map(|t| format!("{t:#06x}")).collect::<Vec<_>>(),
        },
        "wireshark_keys_file": cfg.wireshark_keys_file.as_ref().map(|f| f.display().to_string()),
        "warnings": layer2_warning(cfg).map(String::from).into_iter().chain(wireshark_keys_warning(cfg)).collect::<Vec<_>>(),
    })
}

/// The warning `layer2.pass_unknown` earns.
fn layer2_warning(cfg: &ApplianceConfig) -> Option<&'static str> {
    cfg.layer2.pass_unknown.then_some(
        "layer2.pass_unknown is on: frames that are neither IP nor ARP (PPPoE, MPLS, LLC/SNAP, 0x9100 VLAN tags...) cross the appliance uninspected, and IP packets inside them bypass the SPD",
    )
}

/// The warning `danger_wireshark_keys_file` earns.
fn wireshark_keys_warning(cfg: &ApplianceConfig) -> Option<String> {
    let file = cfg.wireshark_keys_file.as_ref()?;
    Some(if cfg.peers.is_empty() {
        format!(
            "danger_wireshark_keys_file is {}, but no IKE peers are configured: nothing is written there",
            file.display()
        )
    } else {
        format!(
            "danger_wireshark_keys_file is {}: the keys of every CHILD_SA IKE installs are written there, and whoever reads the file can decrypt their traffic; for labs and debugging only",
            file.display()
        )
    })
}

/// What passes at layer 2, and the warning line if any.
fn layer2_text(cfg: &ApplianceConfig) -> (String, String) {
    let l = &cfg.layer2;
    let mut passes = vec!["ARP".to_string()];
    passes.extend(l.allow.iter().map(|t| format!("{t:#06x}")));
    let text = if cfg.mode == crate::config::Mode::Routed {
        "routed: forwards IP sent to its MAC, passes nothing else; tagged frames dropped"
            .to_string()
    } else if l.pass_unknown {
        "passes every non-IP frame".to_string()
    } else {
        format!("passes {}; drops other non-IP frames", passes.join(", "))
    };
    let warning = layer2_warning(cfg)
        .map(|w| format!("\nwarning: {w}\n"))
        .unwrap_or_default();
    (text, warning)
}

/// "192.0.2.0/24 on-link", "0.0.0.0/0 via 203.0.113.254".
fn route_text(r: &bitsgw_pipeline::routed::Route) -> String {
    match r.via {
        Some(via) => format!("{}/{} via {via}", r.prefix, r.len),
        None => format!("{}/{} on-link", r.prefix, r.len),
    }
}
