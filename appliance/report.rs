//! How counters, SAs and policies are shown: text a network engineer reads
//! like `ip -s xfrm state` and `swanctl --list-sas`, or JSON. Keys are
//! never part of a report.

use bitsgw_ipsec::config::PolicySet;
use bitsgw_ipsec::sa::SaState;
use bitsgw_ipsec::DropReason;
use bitsgw_mobility::counters::{MobilityDrop, MobilityEvent};
use bitsgw_pipeline::runner::Report;
use bitsgw_pipeline::PipelineDrop;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The names of the states an SA can be in, as reports give them.
pub const SA_STATES: [&str; 3] = ["active", "soft-expired", "stopped"];

fn state_name(s: SaState) -> &'static str {
    SA_STATES[match s {
        SaState::Active => 0,
        SaState::SoftExpired => 1,
        SaState::Stopped => 2,
    }]
}

/// The report as JSON: SAs, SPD hits, counters and events.
pub fn to_json(report: &Report, policy: &PolicySet) -> Value {
    let sas: Vec<Value> = report
        .sas
        .iter()
        .map(|sa| {
            json!({
                "name": sa.name,
                "keyed_by": if policy.ike_sa(&sa.name).is_some() { "ike" } else { "static" },
                "spi": sa.spi,
                "direction": sa.direction.name(),
                "mode": sa.mode.to_string(),
                "transform": sa.transform.name(),
                "backend": sa.backend.name(),
                "backend_setting": sa.backend_setting.name(),
                "state": state_name(sa.state),
                "packets": sa.stats.packets,
                "bytes": sa.stats.bytes,
                "seq": sa.seq,
                "replay_drops": sa.stats.replay_drops,
                "icv_failures": sa.stats.icv_failures,
                "other_drops": sa.stats.other_drops,
                // Seconds until the time limits fall due (0 once they
                // have); null without a time limit.
                "soft_expires_in_secs": sa.soft_expiry.map(|t| t.saturating_since(report.now).as_secs()),
                "expires_in_secs": sa.hard_expiry.map(|t| t.saturating_since(report.now).as_secs()),
            })
        })
        .collect();
    let spd = |list: &[bitsgw_ipsec::config::EntryConfig], hits: &[u64]| -> Vec<Value> {
        list.iter()
            .enumerate()
            .map(|(i, e)| {
                json!({
                    "name": e.name,
                    "selector": e.selector.to_string(),
                    "action": e.action.to_string(),
                    "hits": hits.get(i).copied().unwrap_or(0),
                })
            })
            .collect()
    };
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(report.stage.drops(*r))))
        .chain(
            PipelineDrop::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(report.pipeline.drops(*r)))),
        )
        // The mobility stage's drops, in the roles that have one.
        .chain(report.mobility.iter().flat_map(|m| {
            MobilityDrop::ALL
                .iter()
                .map(|r| (r.name().to_string(), json!(m.drops(*r))))
        }))
        .collect();
    let p = &report.pipeline;
    let s = &report.stage;
    let mobility_drops = report.mobility.as_ref().map_or(0, |m| m.total_drops());
    let mut v = json!({
        "sas": sas,
        "spd": {"outbound": spd(&policy.outbound, &report.spd_hits_out), "inbound": spd(&policy.inbound, &report.spd_hits_in)},
        "counters": {
            "ports": {
                "host": {"rx_frames": p.host_rx.frames, "rx_bytes": p.host_rx.bytes, "tx_frames": p.host_tx.frames, "tx_bytes": p.host_tx.bytes},
                "network": {"rx_frames": p.net_rx.frames, "rx_bytes": p.net_rx.bytes, "tx_frames": p.net_tx.frames, "tx_bytes": p.net_tx.bytes},
            },
            "non_ip_passed": p.non_ip_passed,
            "layer2_dropped": p.layer2_dropped.iter().map(|c| (c.key.to_string(), json!(c.frames))).collect::<serde_json::Map<_, _>>(),
            "local_delivered": p.local_delivered,
            "handed_over": p.handed_over,
            "ipsec": {
                "outbound_protected": s.outbound_protected,
                "outbound_bypassed": s.outbound_bypassed,
                "inbound_decrypted": s.inbound_decrypted,
                "inbound_bypassed": s.inbound_bypassed,
                "ike_passed": s.ike_passed,
                "fragments_held": s.fragments_held,
                "reassembled": s.reassembled,
                "fragments_sent": s.fragments_sent,
            },
            "drops": drops,
            "drops_total": s.total_drops() + p.total_drops() + mobility_drops,
        },
        "events": report.events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(),
    });
    if let Some(m) = &report.mobility {
        let events: serde_json::Map<String, Value> = MobilityEvent::ALL
            .iter()
            .map(|e| (e.name().to_string(), json!(m.events(*e))))
            .collect();
        v["counters"]["mobility"] = Value::Object(events);
    }
    v
}

/// `show sa` from the JSON form.
pub fn sa_text(v: &Value) -> String {
    let mut out = String::new();
    for sa in v["sas"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}: {} spi {:#010x} esp {} {} backend {} ({}) state {}",
            sa["name"].as_str().unwrap_or("?"),
            sa["direction"].as_str().unwrap_or("?"),
            sa["spi"].as_u64().unwrap_or(0),
            sa["mode"].as_str().unwrap_or("?"),
            sa["transform"].as_str().unwrap_or("?"),
            sa["backend"].as_str().unwrap_or("?"),
            sa["backend_setting"].as_str().unwrap_or("?"),
            sa["state"].as_str().unwrap_or("?"),
        );
        let _ = writeln!(
            out,
            "    packets {} bytes {} seq {} replay-drops {} icv-failures {} other-drops {}",
            sa["packets"],
            sa["bytes"],
            sa["seq"],
            sa["replay_drops"],
            sa["icv_failures"],
            sa["other_drops"]
        );
    }
    out
}

/// `show sp` from the JSON form.
pub fn sp_text(v: &Value) -> String {
    let mut out = String::new();
    for dir in ["outbound", "inbound"] {
        let _ = writeln!(out, "SPD {dir}:");
        for (i, e) in v["spd"][dir].as_array().into_iter().flatten().enumerate() {
            let _ = writeln!(
                out,
                "  {i:>3} {:<22} {}  => {}  hits {}",
                e["name"].as_str().unwrap_or("?"),
                e["selector"].as_str().unwrap_or("?"),
                e["action"].as_str().unwrap_or("?"),
                e["hits"]
            );
        }
    }
    out
}

/// `show counters` from the JSON form.
pub fn counters_text(v: &Value) -> String {
    let c = &v["counters"];
    let mut out = String::new();
    for port in ["host", "network"] {
        let p = &c["ports"][port];
        let _ = writeln!(
            out,
            "port {port:<8} rx {} frames {} bytes   tx {} frames {} bytes",
            p["rx_frames"], p["rx_bytes"], p["tx_frames"], p["tx_bytes"]
        );
    }
    let _ = writeln!(out, "non-IP frames passed {}", c["non_ip_passed"]);
    let dropped: Vec<String> = c["layer2_dropped"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) != 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if !dropped.is_empty() {
        let _ = writeln!(
            out,
            "non-IP frames dropped by EtherType: {}",
            dropped.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "frames for the appliance itself {}",
        c["local_delivered"]
    );
    let _ = writeln!(
        out,
        "frames handed to the queue owning their SA {}",
        c["handed_over"]
    );
    let _ = writeln!(out, "ipsec:");
    for (k, val) in c["ipsec"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  {k:<24} {val}");
    }
    if let Some(m) = c["mobility"].as_object() {
        let _ = writeln!(out, "mobility:");
        for (k, val) in m {
            let _ = writeln!(out, "  {k:<32} {val}");
        }
    }
    for (key, what) in [
        ("link_losses", "interfaces lost"),
        ("trace_write_failures", "trace write failures"),
    ] {
        if let Some(n) = c[key].as_u64() {
            let _ = writeln!(out, "{what} {n}");
        }
    }
    let _ = writeln!(out, "drops (total {}):", c["drops_total"]);
    for (k, val) in c["drops"].as_object().into_iter().flatten() {
        if val.as_u64().unwrap_or(0) != 0 {
            let _ = writeln!(out, "  {k:<32} {val}");
        }
    }
    out
}

/// `show bindings` from the JSON form: the home agent's binding cache, or
/// the mobile node's registration.
pub fn bindings_text(v: &Value) -> String {
    let mut out = String::new();
    let text = |x: &Value| x.as_str().unwrap_or("none").to_string();
    match v["role"].as_str() {
        Some("ha") => {
            let list = v["bindings"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "home agent {}: {} binding{}",
                text(&v["address"]),
                list.len(),
                if list.len() == 1 { "" } else { "s" }
            );
            for b in &list {
                let v4 = match b["home_v4"].as_str() {
                    Some(a) => format!(" (IPv4 {a})"),
                    None => String::new(),
                };
                let nat = match (b["nat"].as_bool(), b["udp"].as_str()) {
                    (Some(true), Some(u)) => format!("nat yes, udp {u}"),
                    (_, Some(u)) => format!("nat no, udp {u}"),
                    _ => "nat no".to_string(),
                };
                let _ = writeln!(out, "  {}{v4}", text(&b["home"]));
                let _ = writeln!(
                    out,
                    "    care-of {}  {nat}  seq {}  lifetime {}s  expires in {}s",
                    text(&b["care_of"]),
                    b["seq"],
                    b["lifetime_secs"],
                    b["expires_in_secs"]
                );
            }
        }
        Some("mn") => {
            let _ = writeln!(
                out,
                "mobile node {}, home agent {}",
                text(&v["home_address"]),
                text(&v["home_agent"])
            );
            let _ = writeln!(out, "  attachment          {}", text(&v["attachment"]));
            let _ = writeln!(out, "  registered care-of  {}", text(&v["registered"]));
            let _ = writeln!(out, "  registering         {}", text(&v["registering"]));
            let nat = if v["nat"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            };
            let _ = writeln!(out, "  nat                 {nat}");
            let _ = writeln!(out, "  IPv4 home address   {}", text(&v["home_v4"]));
        }
        _ => {
            let _ = writeln!(out, "no mobility stage");
        }
    }
    out
}
