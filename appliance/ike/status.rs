//! `show ike`: the status the IKE thread publishes, and its text.

use super::*;

/// `show ike` as text, in the spirit of `swanctl --list-sas`.
pub fn status_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let s = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        x => x.to_string(),
    };
    for p in v["peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}: {} ... {} ({})",
            s(&p["name"]),
            s(&p["local"]),
            s(&p["remote"]),
            s(&p["start"])
        );
        let ike = p["ike_sas"].as_array().cloned().unwrap_or_default();
        if ike.is_empty() {
            let _ = writeln!(out, "  no IKE SA (last down: {})", s(&p["last_down"]));
        }
        for i in &ike {
            let _ = writeln!(
                out,
                "  IKE SA {}_i {}_r with {}: {} {} {} group {}{}, established {} s ago, rekey in {} s",
                s(&i["spi_i"]),
                s(&i["spi_r"]),
                s(&i["remote"]),
                if i["initiator"] == true {
                    "initiator"
                } else {
                    "responder"
                },
                s(&i["encryption"]),
                s(&i["prf"]),
                s(&i["group"]),
                if i["nat_local"] == true || i["nat_remote"] == true {
                    ", NAT"
                } else {
                    ""
                },
                s(&i["established_secs"]),
                s(&i["rekey_in_secs"])
            );
        }
        for c in p["child_sas"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  CHILD_SA {} in {} / {} out {}: {} {}{}, established {} s ago, rekey in {} s",
                s(&c["inbound"]),
                s(&c["inbound_spi"]),
                s(&c["outbound"]),
                s(&c["outbound_spi"]),
                s(&c["mode"]),
                s(&c["transform"]),
                match &c["udp_ports"] {
                    Value::Array(p) if p.len() == 2 =>
                        format!(", UDP-encapsulated {} -> {}", p[0], p[1]),
                    _ => String::new(),
                },
                s(&c["established_secs"]),
                s(&c["rekey_in_secs"])
            );
        }
        let a = &p["acquires"];
        if !a.is_null() {
            let _ = writeln!(
                out,
                "  acquires: {} negotiations started, {} failed, {} deferred{}",
                s(&a["started"]),
                s(&a["failed"]),
                s(&a["deferred"]),
                match a["backoff_secs"].as_u64() {
                    Some(t) => format!(", backing off {t} s"),
                    None => String::new(),
                }
            );
        }
        let _ = writeln!(out, "  counters: {}", p["counters"]);
    }
    let _ = writeln!(out, "drops: {}", v["drops"]);
    out
}

impl Thread {
    pub(super) fn publish_status(&self) {
        let now = self.now().0;
        let peers: Vec<Value> = self
            .peers
            .iter()
            .map(|p| {
                let c = self.endpoints[p.endpoint].counters();
                json!({
                    "name": p.settings.name,
                    "local": p.settings.local.to_string(),
                    "remote": p.settings.remote.map_or("any".into(), |r| r.to_string()),
                    "start": p.settings.start.name(),
                    "acquires": p.acquire.as_ref().map(|a| json!({
                        "started": a.started,
                        "failed": a.failed,
                        "deferred": a.deferred,
                        "negotiating": a.negotiating.is_some(),
                        "backoff_secs": a.not_before.map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
                    })),
                    "ike_sas": p.ike_sas.values().map(|v| timed(v, now, p.settings.ike_lifetime)).collect::<Vec<_>>(),
                    "child_sas": p.children.values().map(|v| timed(v, now, p.settings.child_lifetime)).collect::<Vec<_>>(),
                    "last_down": p.last_down,
                    "held": p.held,
                    "counters": {
                        "datagrams_received": c.datagrams_received,
                        "retransmissions": c.retransmissions,
                        "ike_sas_expired": c.ike_sas_expired,
                        "child_sas_expired": c.child_sas_expired,
                        "nat_keepalives_sent": c.nat_keepalives_sent,
                        "notify_sent": c.notify_sent.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
                        "notify_received": c.notify_received.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
                        "drops": c.drops.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
                        "auth_refused": c.auth_refused.iter().map(|(k, v)| (format!("{k:?}"), *v)).collect::<BTreeMap<_, _>>(),
                    },
                })
            })
            .collect();
        let d = &self.port.drops;
        let v = json!({
            "peers": peers,
            "drops": {
                "no_peer": self.no_peer,
                "to_endpoint_full": self.send_dropped,
                "to_ike_full": d.to_ike_full.load(Ordering::Relaxed),
                "send_failed": d.send_failed.load(Ordering::Relaxed),
                "unmarked": d.unmarked.load(Ordering::Relaxed),
                "sa_changes": self.changes_dropped,
            },
        });
        if let Ok(mut s) = self.status.lock() {
            *s = v;
        }
    }
}
