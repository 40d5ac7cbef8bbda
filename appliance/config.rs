//! The appliance configuration: role, ports, the policy file, workers and
//! the control socket, in JSON. Errors name the file, the entry and the
//! field, like the policy file's; the appliance refuses to start
//! half-configured.
//!
//! ```json
//! {
//!   "role": "gateway",
//!   "policy": "site-to-site-a.json",
//!   "ports": {
//!     "host":    {"type": "af_packet", "interface": "veth-host"},
//!     "network": {"type": "af_packet", "interface": "veth-net"}
//!   },
//!   "mtu": 1500,
//!   "workers": 2,
//!   "control_socket": "/run/bitsgw/a.sock",
//!   "addresses": {
//!     "host":    ["192.0.2.1/24"],
//!     "network": ["203.0.113.1/24", "2001:db8::1/64"]
//!   }
//! }
//! ```
//!
//! `addresses` (optional) gives the appliance its own addresses, per side,
//! answered by its own host stack (ARP, neighbor discovery, echo; see
//! `bitsgw_pipeline::endpoint` for what the network side may reach). They
//! need af_packet ports; the stack answers with the interface's MAC unless
//! `"host_mac"` / `"network_mac"` is given in `addresses`.

use bitsgw_ipsec::config::{
    expect_object, get_str, get_u64, load_policy_file, parse_json, require_str, ConfigError, Ctx,
    PolicySet,
};
use bitsgw_ipsec::StageConfig;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What the appliance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Plain BITS IPsec between unmodified hosts or sites.
    Gateway,
}

/// How a port reaches the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortConfig {
    /// AF_PACKET on an existing interface.
    AfPacket {
        /// The interface.
        interface: String,
    },
    /// A TUN device (created if missing).
    Tun {
        /// The device name.
        name: String,
    },
}

/// A validated appliance configuration.
#[derive(Debug, Clone)]
pub struct ApplianceConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Role.
    pub role: Role,
    /// The policy file, resolved relative to the config file.
    pub policy_file: PathBuf,
    /// The policies, loaded and validated.
    pub policy: PolicySet,
    /// The host-side port.
    pub host: PortConfig,
    /// The network-side port.
    pub network: PortConfig,
    /// Worker threads.
    pub workers: usize,
    /// Frames a worker's queue holds before new ones are dropped (counted).
    pub queue_depth: usize,
    /// The control socket's path.
    pub control_socket: PathBuf,
    /// Settings of the IPsec stage.
    pub stage: StageConfig,
    /// The appliance's own addresses on the host side.
    pub host_addresses: OwnAddresses,
    /// The appliance's own addresses on the network side.
    pub network_addresses: OwnAddresses,
}

/// The appliance's own addresses on one side (none: a transparent bump).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// Addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// The MAC to answer with; the port interface's if not given.
    pub mac: Option<[u8; 6]>,
}

/// Addresses one side may have, at most.
const MAX_OWN_ADDRESSES: usize = 8;

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

fn own_addresses(
    ctx: &Ctx<'_>,
    obj: &serde_json::Map<String, Value>,
) -> Result<[OwnAddresses; 2], ConfigError> {
    let mut out = [OwnAddresses::default(), OwnAddresses::default()];
    let Some(v) = obj.get("addresses") else {
        return Ok(out);
    };
    let a = expect_object(
        ctx,
        v,
        "addresses",
        &["host", "network", "host_mac", "network_mac"],
    )?;
    for (i, side) in ["host", "network"].into_iter().enumerate() {
        let field = format!("addresses.{side}");
        if let Some(list) = a.get(side) {
            let list = list.as_array().ok_or_else(|| {
                ctx.err(&field, "must be a list of addresses with prefix lengths")
            })?;
            if list.len() > MAX_OWN_ADDRESSES {
                return Err(ctx.err(
                    &field,
                    format!(
                        "has {} addresses, at most {MAX_OWN_ADDRESSES} are supported",
                        list.len()
                    ),
                ));
            }
            for (n, item) in list.iter().enumerate() {
                let f = format!("{field}[{n}]");
                let text = item
                    .as_str()
                    .ok_or_else(|| ctx.err(&f, "must be a string like \"192.0.2.1/24\""))?;
                let bad = || {
                    ctx.err(&f, format!("\"{text}\" is not an address with a prefix length (like \"192.0.2.1/24\" or \"2001:db8::1/64\")"))
                };
                let (addr, len) = text.split_once('/').ok_or_else(bad)?;
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if len == 0 || len > max {
                    return Err(ctx.err(&f, format!("prefix length {len} must be from 1 to {max}")));
                }
                if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
                    return Err(ctx.err(&f, format!("{addr} can not be the appliance's address")));
                }
                if out
                    .iter()
                    .flat_map(|o| &o.addresses)
                    .any(|(a, _)| *a == addr)
                {
                    return Err(ctx.err(&f, format!("{addr} is given twice")));
                }
                out[i].addresses.push((addr, len));
            }
        }
        let mac_field = format!("{side}_mac");
        if let Some(m) = get_str(ctx, a, &mac_field).map_err(|mut e| {
            e.field = format!("addresses.{mac_field}");
            e
        })? {
            let mac = parse_mac(m).ok_or_else(|| {
                ctx.err(
                    &format!("addresses.{mac_field}"),
                    format!("\"{m}\" is not a unicast MAC address like \"02:00:00:00:00:01\""),
                )
            })?;
            out[i].mac = Some(mac);
        }
    }
    Ok(out)
}

const FIELDS: &[&str] = &[
    "role",
    "policy",
    "ports",
    "mtu",
    "workers",
    "queue_depth",
    "control_socket",
    "udp_encap_ports",
    "icmp_source_v4",
    "icmp_source_v6",
    "addresses",
    "comment",
];

fn port(
    ctx: &Ctx<'_>,
    ports: &serde_json::Map<String, Value>,
    side: &str,
) -> Result<PortConfig, ConfigError> {
    let field = format!("ports.{side}");
    let v = ports
        .get(side)
        .ok_or_else(|| ctx.err(&field, "is required (the appliance sits between two ports)"))?;
    let obj = expect_object(ctx, v, &field, &["type", "interface", "name"])?;
    let sub = |k: &str| format!("{field}.{k}");
    let kind = require_str(ctx, obj, "type").map_err(|mut e| {
        e.field = sub("type");
        e
    })?;
    let name_of = |k: &str| -> Result<String, ConfigError> {
        let n = get_str(ctx, obj, k)
            .map_err(|mut e| {
                e.field = sub(k);
                e
            })?
            .ok_or_else(|| ctx.err(&sub(k), format!("a {kind} port needs \"{k}\"")))?;
        if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
            return Err(ctx.err(&sub(k), format!("\"{n}\" is not a valid interface name")));
        }
        Ok(n.to_string())
    };
    match kind {
        "af_packet" => Ok(PortConfig::AfPacket {
            interface: name_of("interface")?,
        }),
        "tun" => Ok(PortConfig::Tun {
            name: name_of("name")?,
        }),
        other => Err(ctx.err(&sub("type"), format!("\"{other}\" is not af_packet or tun"))),
    }
}

/// Reads and validates an appliance configuration, and the policy file it
/// names.
pub fn load(path: &Path) -> Result<ApplianceConfig, ConfigError> {
    let file = path.display().to_string();
    let mut ctx = Ctx {
        file: &file,
        entry: "file".into(),
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| ctx.err("", format!("can not be read: {e}")))?;
    let root = parse_json(&ctx, &text)?;
    ctx.entry = "appliance".into();
    let obj = expect_object(&ctx, &root, "", FIELDS)?;
    let role = match require_str(&ctx, obj, "role")? {
        "gateway" => Role::Gateway,
        r @ ("mn" | "ha") => {
            return Err(ctx.err(
                "role",
                format!(
                    "role \"{r}\" needs the mobility stage, which this build does not have yet"
                ),
            ))
        }
        other => return Err(ctx.err("role", format!("\"{other}\" is not gateway, mn or ha"))),
    };
    let policy_name = require_str(&ctx, obj, "policy")?;
    let policy_file = path.parent().unwrap_or(Path::new(".")).join(policy_name);
    let policy = load_policy_file(&policy_file)?;
    let ports = obj
        .get("ports")
        .ok_or_else(|| ctx.err("ports", "is required"))?;
    let ports = expect_object(&ctx, ports, "ports", &["host", "network"])?;
    let host = port(&ctx, ports, "host")?;
    let network = port(&ctx, ports, "network")?;
    if host == network {
        return Err(ctx.err("ports.network", "is the same port as ports.host"));
    }
    let mut stage = StageConfig::default();
    if let Some(mtu) = get_u64(&ctx, obj, "mtu")? {
        if !(576..=9000).contains(&mtu) {
            return Err(ctx.err("mtu", "must be from 576 to 9000"));
        }
        stage.mtu = mtu as usize;
    }
    let workers = get_u64(&ctx, obj, "workers")?.unwrap_or(1);
    if !(1..=64).contains(&workers) {
        return Err(ctx.err("workers", "must be from 1 to 64"));
    }
    let queue_depth = get_u64(&ctx, obj, "queue_depth")?.unwrap_or(1024);
    if !(16..=1 << 20).contains(&queue_depth) {
        return Err(ctx.err("queue_depth", "must be from 16 to 1048576"));
    }
    if let Some(v) = obj.get("udp_encap_ports") {
        let list = v
            .as_array()
            .ok_or_else(|| ctx.err("udp_encap_ports", "must be a list of ports"))?;
        for p in list {
            let p = p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    ctx.err(
                        "udp_encap_ports",
                        format!("{p} is not a port from 1 to 65535"),
                    )
                })?;
            if !stage.udp_encap_ports.contains(&p) {
                stage.udp_encap_ports.push(p);
            }
        }
    }
    // Ports the SAs use for UDP encapsulation are recognised inbound too.
    for sa in &policy.sas {
        if let Some(u) = sa.udp_encap {
            if !stage.udp_encap_ports.contains(&u.local_port) {
                stage.udp_encap_ports.push(u.local_port);
            }
        }
    }
    for (field, v6) in [("icmp_source_v4", false), ("icmp_source_v6", true)] {
        if let Some(s) = get_str(&ctx, obj, field)? {
            match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if !v6 => stage.icmp_source_v4 = Some(a.octets()),
                Ok(IpAddr::V6(a)) if v6 => stage.icmp_source_v6 = Some(a.octets()),
                _ => {
                    let fam = if v6 { "IPv6" } else { "IPv4" };
                    return Err(ctx.err(field, format!("\"{s}\" is not an {fam} address")));
                }
            }
        }
    }
    let control_socket =
        PathBuf::from(get_str(&ctx, obj, "control_socket")?.unwrap_or("/run/bitsgw/bitsgw.sock"));
    let [host_addresses, network_addresses] = own_addresses(&ctx, obj)?;
    for (side, own, p) in [
        ("host", &host_addresses, &host),
        ("network", &network_addresses, &network),
    ] {
        if !own.addresses.is_empty() && !matches!(p, PortConfig::AfPacket { .. }) {
            return Err(ctx.err(
                &format!("addresses.{side}"),
                format!("own addresses need an af_packet port (Ethernet), ports.{side} is not one"),
            ));
        }
    }
    Ok(ApplianceConfig {
        file: path.to_path_buf(),
        role,
        policy_file,
        policy,
        host,
        network,
        workers: workers as usize,
        queue_depth: queue_depth as usize,
        control_socket,
        stage,
        host_addresses,
        network_addresses,
    })
}

/// Whether a JSON file is an appliance configuration (it has a "role")
/// rather than a policy file.
pub fn is_appliance_config(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.get("role").is_some())
}
