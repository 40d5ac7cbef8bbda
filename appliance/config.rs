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
//!   "control_socket_group": "bitsgw",
//!   "state_dir": "/var/lib/bitsgw/a",
//!   "addresses": {
//!     "host":    ["192.0.2.1/24"],
//!     "network": ["203.0.113.1/24", "2001:db8::1/64"]
//!   }
//! }
//! ```
//!
//! `state_dir` (default `/var/lib/bitsgw`, relative paths from the
//! configuration file's directory) holds what `run` must remember across
//! restarts: the sequence-number leases of its outbound SAs. Each appliance
//! needs its own; it is locked while in use.
//!
//! The `mn` and `ha` roles put the mobility stage around the IPsec stage
//! and need a `mobility` object; addresses in it are literals or names from
//! the policy file's `addresses`. A home agent:
//!
//! ```json
//! {
//!   "role": "ha",
//!   "policy": "dsmip-hostwide-ha.json",
//!   "ports": {"host": {"type": "tun", "name": "ha-home"}, "network": {"type": "tun", "name": "ha-net"}},
//!   "workers": 1,
//!   "mobility": {
//!     "address": "home_agent_1",
//!     "address_v4": "203.0.113.1",
//!     "home_prefixes": ["2001:db8:1::/64"],
//!     "nodes": [{"home": "home_address_1", "home_v4": "home_address_v4_1"}],
//!     "ipv4_pool": "192.0.2.200-192.0.2.220",
//!     "ipv4_prefix_len": 24,
//!     "max_lifetime_secs": 600,
//!     "nat_refresh_secs": 110,
//!     "force_udp": false
//!   }
//! }
//! ```
//!
//! (`address` and `home_prefixes` and `nodes` are required; `ipv4_pool`
//! may also be a list of addresses.) A mobile node, acting for the host
//! behind it:
//!
//! ```json
//! {
//!   "role": "mn",
//!   "policy": "dsmip-hostwide-mn.json",
//!   "ports": {"host": {"type": "tun", "name": "mn-host"}, "network": {"type": "tun", "name": "mn-net"}},
//!   "mobility": {
//!     "home_address": "home_address_1",
//!     "home_agent": "home_agent_1",
//!     "home_agent_v4": "203.0.113.1",
//!     "home_v4": "0.0.0.0",
//!     "lifetime_secs": 420,
//!     "udp_port": 4191,
//!     "classifier": "api",
//!     "attachment": "2001:db8:2::100"
//!   }
//! }
//! ```
//!
//! (`home_address` and `home_agent` are required. `home_v4` "0.0.0.0" asks
//! the home agent for an IPv4 home address. `attachment` is where the node
//! is when the appliance starts: "home" sends a de-registration, an IPv6 or
//! IPv4 care-of address a registration; without it the node starts at home
//! and sends nothing until `bitsgw ctl move`.) The binding state lives in
//! one worker, so these roles refuse `workers` above 1. Both roles may key
//! SAs with IKEv2 (`peers`; a mobile node's peer with `"local":
//! "care-of"`, see `config/care_of.rs`), and `"key_management_mobility":
//! true` in either `mobility` object sets the K bit (RFC 6275 6.1.7, 6.1.8:
//! the IKE SA moves with the registration), which needs peers.
//!
//! `addresses` (optional) gives the appliance its own addresses, per side,
//! answered by its own host stack (ARP, neighbor discovery, echo; see
//! `bitsgw_pipeline::endpoint` for what the network side may reach). On
//! af_packet ports the stack answers with the interface's MAC unless
//! `"host_mac"` / `"network_mac"` is given in `addresses`; on a TUN port
//! it takes IP packets alone (no MAC), and on the network side IKE alone.
//!
//! `"pipeline"` is `"workers"` (the default: each port's receive thread
//! hands frames, by SA, to `workers` worker threads) or
//! `"run-to-completion"`: each port's receive thread handles its frames
//! itself with a gateway of its own, with no hand-over between threads
//! (two threads in all; `workers` must then be 1). `"queues"`: one receive
//! queue per worker (`workers` of them), each running to completion: each
//! port opens one socket per queue in a `PACKET_FANOUT` group (a TUN port
//! one queue of a multi-queue device per queue), each queue's
//! thread handles what its sockets receive and hands a frame whose SA
//! another queue owns to that queue. Only the
//! `gateway` role runs to completion or in queues: the mobility roles keep
//! their binding state in one worker.
//!
//! `"on_link_loss"` says what happens when a port's interface is deleted
//! while the appliance runs: `"exit"` (the default) stops it with an
//! error naming the interface and a non-zero exit status; `"wait"` keeps
//! it running, logs and counts the loss, and binds to an interface of the
//! same name when one appears (af_packet ports; a TUN port always exits).
//!
//! `"mode"` is `"inline"` (the default: a bump in the wire, frames keep
//! their Ethernet header) or `"routed"`: the appliance is the router of
//! the hosts on the host side and a host on the network side
//! (`bitsgw_pipeline::routed`). Routed mode needs af_packet ports, own
//! addresses on both sides (the host side's is the hosts' gateway; its
//! prefixes are on-link) and `routes`:
//!
//! ```json
//! "mode": "routed",
//! "addresses": {"host": ["192.0.2.1/24"], "network": ["203.0.113.1/24", "2001:db8:f::2/64"]},
//! "routes": {
//!   "network": {"default_via": "203.0.113.254", "v6_default_via": "2001:db8:f::1"},
//!   "host": {"routes": [{"prefix": "192.0.2.128/25", "via": "192.0.2.2"}]}
//! }
//! ```
//!
//! `routes.network` needs `default_via` (IPv4) or `v6_default_via` (IPv6)
//! or both, each on-link to a network address of its family; everything
//! the appliance sends on the network side goes to them. Both sides may
//! list `routes` (`prefix` and an on-link `via`) for destinations behind
//! another router; the longest prefix wins.
//!
//! `"user"` (optional; a name or uid from /etc/passwd, not root) is the
//! user `run` becomes once its ports, control socket and files are open
//! when it is started as root: that uid, its primary gid, no
//! supplementary groups and no capabilities (see `service.rs`). The policy
//! file must then be readable by that user, since a reload reads it again.
//!
//! `layer2` (optional, inline mode) says which Ethernet frames that carry
//! no IP pass the bump. IP behind 802.1Q and 802.1ad tags is always
//! processed; ARP always passes; everything else (PPPoE, MPLS, LLC/SNAP,
//! `0x9100` tags, LLDP...) is dropped and counted by EtherType unless
//! listed in `allow` (EtherTypes as numbers or `"0x88cc"` strings) or
//! `pass_unknown` is true, which lets every non-IP frame cross uninspected
//! and makes `check` warn:
//!
//! ```json
//! "layer2": {"allow": ["0x88cc"], "pass_unknown": false}
//! ```
//!
//! `peers` (optional, the gateway role) are the IKEv2 peers that key the
//! policy's `"keyed_by": "ike"` SAs, each on one of the network addresses
//! (see `config/peers.rs`).
//!
//! `danger_wireshark_keys_file` (optional, labs and debugging only; see
//! [`wireshark_keys_file`]) is where the IKE thread appends every
//! CHILD_SA's keys for Wireshark; `check` and the log at start warn of it.
//!
//! `metrics` (optional) serves the counters to Prometheus over HTTP, on a
//! loopback address unless allowed otherwise ([`metrics_settings`]):
//!
//! ```json
//! "metrics": {"listen": "127.0.0.1:9474"}
//! ```

use bitsgw_io::OnLinkLoss;
use bitsgw_ipsec::config::{
    field_names, parse_json, parse_policy, read_document, resolve_addr, shown_value, ConfigError,
    Ctx, Entries, Flag, Int, PolicySet, Shown,
};
use bitsgw_ipsec::StageConfig;
use bitsgw_mobility::classify::ClassifierMode;
use bitsgw_mobility::ha::{HaConfig, ServedNode};
use bitsgw_mobility::mn::{Attachment, MnConfig};
use bitsgw_pipeline::routed::Route;
use bitsgw_pipeline::Layer2Policy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "config/care_of.rs"]
mod care_of;
#[path = "config/mobility_settings.rs"]
mod mobility_settings;
#[path = "config/own_addresses.rs"]
mod own_addresses;
#[path = "config/peers.rs"]
mod peers;
#[path = "config/policy_file.rs"]
mod policy_file;
#[path = "config/raw.rs"]
mod raw;
#[path = "config/routes.rs"]
mod routes;
#[path = "config/service.rs"]
mod service;

pub use care_of::{care_of_address, check_care_of, CareOfPeer};
pub use mobility_settings::parse_attachment;
use mobility_settings::{home_agent, mobile_node};
use own_addresses::own_addresses;
pub use own_addresses::OwnAddresses;
pub use peers::{peers_mismatch, ChildSettings, PeerAuth, PeerSettings, StartAction};
pub use policy_file::load_policy_file;
use raw::{
    RawAppliance, RawHomeAgent, RawLayer2, RawMetrics, RawMobileNode, RawOwnAddresses, RawPort,
    RawRoute, RawRoutes,
};
use routes::mode_and_routes;
pub(crate) use service::metrics_settings;
use service::{control_socket_path, group_id, user_ids};

/// What the appliance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Plain BITS IPsec between unmodified hosts or sites.
    Gateway,
    /// A DSMIPv6 mobile node acting for the unmodified host behind it.
    MobileNode,
    /// A DSMIPv6 home agent in front of the home link.
    HomeAgent,
}

impl Role {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::MobileNode => "mn",
            Role::HomeAgent => "ha",
        }
    }
}

/// The mobility stage's settings (the `mn` and `ha` roles).
#[derive(Debug, Clone)]
pub enum MobilitySettings {
    /// A home agent.
    HomeAgent(HaConfig),
    /// A mobile node.
    MobileNode {
        /// Its settings.
        config: MnConfig,
        /// Where it is attached when the appliance starts (none: at home,
        /// nothing sent).
        attachment: Option<Attachment>,
    },
}

/// How the appliance sits between its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A bump in the wire: frames keep their Ethernet header.
    Inline,
    /// The hosts' router on the host side, a host on the network side.
    Routed,
}

impl Mode {
    /// The name the configuration uses.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::Routed => "routed",
        }
    }
}

/// Routed mode's routes, per side (own addresses and MACs are in
/// [`ApplianceConfig`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSettings {
    /// Host side: the on-link prefixes of the host addresses, then the
    /// configured routes.
    pub host: Vec<Route>,
    /// Network side: the defaults, then the configured routes.
    pub network: Vec<Route>,
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
    /// AF_XDP on queue 0 of an existing interface, copy mode (a binary
    /// built with the cargo feature `af-xdp`).
    AfXdp {
        /// The interface.
        interface: String,
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
    /// Each port's receive thread handles its own frames (`"pipeline":
    /// "run-to-completion"`) instead of handing them to workers.
    pub run_to_completion: bool,
    /// One receive queue per worker, each running to completion
    /// (`"pipeline": "queues"`): `workers` sockets per port in a
    /// `PACKET_FANOUT` group, each queue's thread handling what it receives
    /// and handing a frame whose SA another queue owns to that queue.
    pub queues: bool,
    /// The control socket's path.
    pub control_socket: PathBuf,
    /// The group that may use the control socket too (a gid): the socket
    /// is then 0660 and a directory bitsgw creates for it 0750, both of
    /// this group; without one, 0600 and 0700.
    pub control_socket_group: Option<u32>,
    /// What happens when a port's interface is deleted under the running
    /// appliance (`"on_link_loss"`).
    pub on_link_loss: OnLinkLoss,
    /// Where `run` keeps its state: the sequence-number leases of the
    /// outbound SAs (`appliance/leases.rs`).
    pub state_dir: PathBuf,
    /// Settings of the IPsec stage.
    pub stage: StageConfig,
    /// The appliance's own addresses on the host side.
    pub host_addresses: OwnAddresses,
    /// The appliance's own addresses on the network side.
    pub network_addresses: OwnAddresses,
    /// The mobility stage (the `mn` and `ha` roles only).
    pub mobility: Option<MobilitySettings>,
    /// IKEv2 peers (`"peers"`), which key the policy's IKE-keyed SAs.
    pub peers: Vec<PeerSettings>,
    /// Inline or routed.
    pub mode: Mode,
    /// Routed mode's routes (`None` inline).
    pub routes: Option<RouteSettings>,
    /// Which non-IP frames pass inline.
    pub layer2: Layer2Policy,
    /// Where the metrics endpoint listens ([`metrics_settings`]);
    /// none by default.
    pub metrics: Option<std::net::SocketAddr>,
    /// The user `run` becomes once its ports and socket are open
    /// (`"user"`: a name or uid from /etc/passwd; uid and primary gid).
    pub user: Option<(u32, u32)>,
    /// Where the IKE thread appends every CHILD_SA's keys for Wireshark
    /// (`"danger_wireshark_keys_file"`, labs and debugging only; see
    /// [`wireshark_keys_file`]).
    pub wireshark_keys_file: Option<PathBuf>,
}

/// Where `run` keeps its state when the configuration does not say
/// (`"state_dir"`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bitsgw";

/// The fields of an appliance configuration.
pub(crate) fn fields() -> &'static [&'static str] {
    field_names::<RawAppliance>()
}

/// Puts `prefix` in front of the field an error names (a reader called on
/// a nested object names the field inside it).
fn within(prefix: &str) -> impl Fn(ConfigError) -> ConfigError + '_ {
    move |mut e| {
        e.field = if e.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", e.field)
        };
        e
    }
}

fn port(ctx: &Ctx<'_>, raw: Option<RawPort>, side: &str) -> Result<PortConfig, ConfigError> {
    let field = format!("ports.{side}");
    let raw =
        raw.ok_or_else(|| ctx.err(&field, "is required (the appliance sits between two ports)"))?;
    let sub = |k: &str| format!("{field}.{k}");
    let kind = raw.kind.as_str();
    let name_of = |k: &str, given: Option<String>| -> Result<String, ConfigError> {
        let n = given.ok_or_else(|| ctx.err(&sub(k), format!("a {kind} port needs \"{k}\"")))?;
        if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
            return Err(ctx.err(
                &sub(k),
                format!("{} is not a valid interface name", Shown(&n)),
            ));
        }
        Ok(n)
    };
    match kind {
        "af_packet" => Ok(PortConfig::AfPacket {
            interface: name_of("interface", raw.interface)?,
        }),
        "tun" => Ok(PortConfig::Tun {
            name: name_of("name", raw.name)?,
        }),
        "af_xdp" if cfg!(feature = "af-xdp") => Ok(PortConfig::AfXdp {
            interface: name_of("interface", raw.interface)?,
        }),
        "af_xdp" => Err(ctx.err(
            &sub("type"),
            "this bitsgw was built without AF_XDP ports (cargo feature af-xdp)",
        )),
        other => Err(ctx.err(
            &sub("type"),
            format!("{} is not af_packet or tun", Shown(other)),
        )),
    }
}

/// Reads and validates an appliance configuration, and the policy file it
/// names.
pub fn load(path: &Path) -> Result<ApplianceConfig, ConfigError> {
    let file = path.display().to_string();
    let ctx = Ctx {
        file: &file,
        entry: "file".into(),
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| ctx.err("", format!("can not be read: {e}")))?;
    parse(&text, path)
}

/// Validates the text of an appliance configuration that lives at `path`
/// (the policy file it names is read relative to it).
pub fn parse(text: &str, path: &Path) -> Result<ApplianceConfig, ConfigError> {
    let file = path.display().to_string();
    let mut ctx = Ctx {
        file: &file,
        entry: "file".into(),
    };
    let root = parse_json(&ctx, text)?;
    ctx.entry = "appliance".into();
    let raw: RawAppliance = read_document(&file, &root, Entries::Whole("appliance"))?;
    let role = match raw.role.as_str() {
        "gateway" => Role::Gateway,
        "mn" => Role::MobileNode,
        "ha" => Role::HomeAgent,
        other => return Err(ctx.err("role", format!("{} is not gateway, mn or ha", Shown(other)))),
    };
    // Paths are shown by `check` and in errors: one that could be a pasted
    // key is refused before it is.
    for (field, value) in [
        ("policy", Some(&raw.policy)),
        ("control_socket", raw.control_socket.as_ref()),
        ("state_dir", raw.state_dir.as_ref()),
        (
            "danger_wireshark_keys_file",
            raw.danger_wireshark_keys_file.as_ref(),
        ),
    ] {
        // An absolute path is taken as one, however long (it is masked
        // where it is shown if it has a key's shape).
        let key_like = |v: &&String| !v.starts_with('/') && Shown(v).is_key_like();
        if let Some(v) = value.filter(key_like) {
            return Err(ctx.err(field, format!("{} looks like a key, not a path", Shown(v))));
        }
    }
    let policy_file = path.parent().unwrap_or(Path::new(".")).join(&raw.policy);
    let policy = load_policy_file(&policy_file)?;
    let host = port(&ctx, raw.ports.host, "host")?;
    let network = port(&ctx, raw.ports.network, "network")?;
    if host == network {
        return Err(ctx.err("ports.network", "is the same port as ports.host"));
    }
    let mut stage = StageConfig::default();
    if let Some(Int(mtu)) = raw.mtu {
        if !(576..=9000).contains(&mtu) {
            return Err(ctx.err("mtu", "must be from 576 to 9000"));
        }
        stage.mtu = mtu as usize;
    }
    let workers = raw.workers.map_or(1, |Int(n)| n);
    if !(1..=64).contains(&workers) {
        return Err(ctx.err("workers", "must be from 1 to 64"));
    }
    if role != Role::Gateway && workers > 1 {
        return Err(ctx.err(
            "workers",
            format!(
                "the {} role keeps its binding state in one worker; it runs with \"workers\": 1",
                role.name()
            ),
        ));
    }
    let (run_to_completion, queues) = match raw.pipeline.as_deref().unwrap_or("workers") {
        "workers" => (false, false),
        "run-to-completion" => (true, false),
        "queues" => (false, true),
        other => {
            return Err(ctx.err(
                "pipeline",
                format!(
                    "{} is not workers, run-to-completion or queues",
                    Shown(other)
                ),
            ))
        }
    };
    for (field, port) in [("ports.host", &host), ("ports.network", &network)] {
        if queues && matches!(port, PortConfig::AfXdp { .. }) {
            return Err(ctx.err(field, "queues need af_packet or tun ports"));
        }
    }
    if queues && role != Role::Gateway {
        return Err(ctx.err(
            "pipeline",
            format!(
                "the {} role keeps its binding state in one worker; it can not run in queues",
                role.name()
            ),
        ));
    }
    if run_to_completion && role != Role::Gateway {
        return Err(ctx.err(
            "pipeline",
            format!(
                "the {} role keeps its binding state in one worker; it can not run to completion",
                role.name()
            ),
        ));
    }
    if run_to_completion && workers > 1 {
        return Err(ctx.err(
            "workers",
            "run-to-completion uses one thread per port; leave workers at 1",
        ));
    }
    let mobility = match (role, raw.mobility) {
        (Role::Gateway, None) => None,
        (Role::Gateway, Some(_)) => {
            return Err(ctx.err("mobility", "only the mn and ha roles have a mobility stage"))
        }
        (_, None) => {
            return Err(ctx.err("mobility", format!("is required for role {}", role.name())))
        }
        (Role::HomeAgent, Some(v)) => {
            let m: RawHomeAgent = read_document(&file, &v, Entries::Whole("appliance"))
                .map_err(within("mobility"))?;
            Some(MobilitySettings::HomeAgent(
                home_agent(&ctx, m, &policy.addresses).map_err(within("mobility"))?,
            ))
        }
        (Role::MobileNode, Some(v)) => {
            let m: RawMobileNode = read_document(&file, &v, Entries::Whole("appliance"))
                .map_err(within("mobility"))?;
            let (config, attachment) =
                mobile_node(&ctx, m, &policy.addresses).map_err(within("mobility"))?;
            Some(MobilitySettings::MobileNode { config, attachment })
        }
    };
    let queue_depth = raw.queue_depth.map_or(1024, |Int(n)| n);
    if !(16..=1 << 20).contains(&queue_depth) {
        return Err(ctx.err("queue_depth", "must be from 16 to 1048576"));
    }
    if let Some(list) = raw.udp_encap_ports.map(|l| l.0) {
        for p in list {
            let p = p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    ctx.err(
                        "udp_encap_ports",
                        format!("{} is not a port from 1 to 65535", shown_value(&p)),
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
    for (field, v6, text) in [
        ("icmp_source_v4", false, &raw.icmp_source_v4),
        ("icmp_source_v6", true, &raw.icmp_source_v6),
    ] {
        if let Some(s) = text {
            match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if !v6 => stage.icmp_source_v4 = Some(a.octets()),
                Ok(IpAddr::V6(a)) if v6 => stage.icmp_source_v6 = Some(a.octets()),
                _ => {
                    let fam = if v6 { "IPv6" } else { "IPv4" };
                    return Err(ctx.err(field, format!("{} is not an {fam} address", Shown(s))));
                }
            }
        }
    }
    let control_socket = control_socket_path(
        &ctx,
        raw.control_socket
            .as_deref()
            .unwrap_or("/run/bitsgw/bitsgw.sock"),
    )?;
    let control_socket_group = match &raw.control_socket_group {
        None => None,
        Some(v) => Some(
            group_id(v, Path::new("/etc/group"))
                .map_err(|problem| ctx.err("control_socket_group", problem))?,
        ),
    };
    let on_link_loss = match raw.on_link_loss.as_deref().unwrap_or("exit") {
        "exit" => OnLinkLoss::Fail,
        "wait" => OnLinkLoss::Wait,
        other => return Err(ctx.err("on_link_loss", format!("\"{other}\" is not exit or wait"))),
    };
    let state_dir = match raw.state_dir.as_deref() {
        Some("") => return Err(ctx.err("state_dir", "must not be empty")),
        Some(d) => path.parent().unwrap_or(Path::new(".")).join(d),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let wireshark_keys_file = raw
        .danger_wireshark_keys_file
        .as_deref()
        .map(|f| wireshark_keys_file(&ctx, path.parent().unwrap_or(Path::new(".")), f))
        .transpose()?;
    let [host_addresses, mut network_addresses] = own_addresses(&ctx, raw.addresses)?;
    care_of::home_agent_addresses(&mut network_addresses, &network, mobility.as_ref());
    let (mode, routes) = mode_and_routes(
        &ctx,
        raw.mode.as_deref(),
        raw.routes,
        [&host, &network],
        [&host_addresses, &network_addresses],
    )?;
    for (side, own, p) in [
        ("host", &host_addresses, &host),
        ("network", &network_addresses, &network),
    ] {
        // On a TUN port the host stack takes IP packets alone.
        if own.mac.is_some() && matches!(p, PortConfig::Tun { .. }) {
            return Err(ctx.err(
                &format!("addresses.{side}_mac"),
                format!("ports.{side} is a TUN port, which has no MAC"),
            ));
        }
    }
    let peers = peers::peers(
        ctx.file,
        raw.peers,
        path.parent().unwrap_or(Path::new(".")),
        &policy,
        &network_addresses,
        mobility.as_ref(),
    )?;
    let mobile_node = matches!(mobility, Some(MobilitySettings::MobileNode { .. }));
    let follows = |p: &PeerSettings| p.care_of.is_some() || !mobile_node;
    if mobility_settings::key_management_mobility(mobility.as_ref()) && !peers.iter().any(follows) {
        return Err(ctx.err(
            "mobility.key_management_mobility",
            "moves the IKE SA with the care-of address: it needs IKE peers (\"peers\"), on a mobile node one with \"local\": \"care-of\"",
        ));
    }
    if mode == Mode::Routed && raw.layer2.is_some() {
        return Err(ctx.err(
            "layer2",
            "is for inline mode; routed mode forwards IP alone and drops tagged frames",
        ));
    }
    let layer2 = layer2_policy(&ctx, raw.layer2)?;
    let metrics = metrics_settings(&ctx, raw.metrics)?;
    let user = match &raw.user {
        None => None,
        Some(v) => Some(
            user_ids(v, Path::new("/etc/passwd")).map_err(|problem| ctx.err("user", problem))?,
        ),
    };
    Ok(ApplianceConfig {
        file: path.to_path_buf(),
        user,
        layer2,
        metrics,
        mode,
        routes,
        role,
        policy_file,
        policy,
        host,
        network,
        workers: workers as usize,
        queue_depth: queue_depth as usize,
        run_to_completion,
        queues,
        control_socket,
        control_socket_group,
        on_link_loss,
        state_dir,
        stage,
        host_addresses,
        network_addresses,
        mobility,
        peers,
        wireshark_keys_file,
    })
}

/// `"danger_wireshark_keys_file"`, relative to the configuration's
/// directory `dir`: the file the IKE thread appends the keys of every
/// CHILD_SA to, in Wireshark's ESP SA table format, so that a capture of a
/// lab can be decrypted. Whoever reads it reads all the traffic of those
/// SAs; an existing file that group or others may read, or that is not a
/// regular file, is refused (the IKE thread creates a new one 0600).
fn wireshark_keys_file(ctx: &Ctx<'_>, dir: &Path, shown: &str) -> Result<PathBuf, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    const FIELD: &str = "danger_wireshark_keys_file";
    if shown.is_empty() {
        return Err(ctx.err(FIELD, "must not be empty"));
    }
    let path = dir.join(shown);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx.err(FIELD, format!("{shown}: {e}"))),
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(ctx.err(FIELD, format!("{shown} exists and is not a regular file")))
        }
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ctx.err(
                    FIELD,
                    format!(
                        "{shown} is readable or writable by group or others (mode {mode:03o}); keys are written there: it must be its owner's only (chmod 600)"
                    ),
                ));
            }
        }
    }
    Ok(path)
}

/// EtherTypes `layer2.allow` may list, at most.
const MAX_LAYER2_ALLOW: usize = 16;

/// The `layer2` object.
fn layer2_policy(ctx: &Ctx<'_>, raw: Option<RawLayer2>) -> Result<Layer2Policy, ConfigError> {
    let mut policy = Layer2Policy::default();
    let Some(l) = raw else {
        return Ok(policy);
    };
    policy.pass_unknown = l.pass_unknown.is_some_and(|Flag(b)| b);
    let items = l.allow.unwrap_or_default().0;
    if items.len() > MAX_LAYER2_ALLOW {
        return Err(ctx.err(
            "layer2.allow",
            format!(
                "lists {} EtherTypes, at most {MAX_LAYER2_ALLOW} are supported",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let field = format!("layer2.allow[{i}]");
        let ethertype = match item {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(t) => t
                .strip_prefix("0x")
                .and_then(|h| u16::from_str_radix(h, 16).ok()),
            _ => None,
        }
        .ok_or_else(|| {
            ctx.err(
                &field,
                format!(
                    "{} is not an EtherType (a number, or hex like \"0x88cc\")",
                    shown_value(item)
                ),
            )
        })?;
        let refused = match ethertype {
            t if t < bitsgw_wire::ether::ETHERTYPE_MIN => {
                Some("is an IEEE 802.3 length, not an EtherType")
            }
            bitsgw_wire::ether::ETHERTYPE_IPV4 | bitsgw_wire::ether::ETHERTYPE_IPV6 => {
                Some("is IP, which always goes through the SPD")
            }
            bitsgw_wire::ether::ETHERTYPE_ARP => Some("is ARP, which always passes"),
            bitsgw_wire::ether::TPID_CTAG | bitsgw_wire::ether::TPID_STAG => Some(
                "is a VLAN tag, which bitsgw looks behind (deeper stacks can only pass with pass_unknown)",
            ),
            _ => None,
        };
        if let Some(why) = refused {
            return Err(ctx.err(&field, format!("{ethertype:#06x} {why}")));
        }
        if !policy.allow.contains(&ethertype) {
            policy.allow.push(ethertype);
        }
    }
    Ok(policy)
}

/// Whether a JSON file is an appliance configuration (it has a "role")
/// rather than a policy file.
pub fn is_appliance_config(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v.get("role").is_some())
}

#[cfg(test)]
mod hostile {
    //! Arbitrary and mutated appliance configurations: the parser never
    //! panics, and every error names the file it is about (the
    //! configuration, or the policy file it names).

    use super::parse;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    fn examples() -> Vec<(PathBuf, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                (p, t)
            })
            .collect();
        v.sort();
        v
    }

    fn check(text: &str, path: &Path) -> Result<(), TestCaseError> {
        if let Err(e) = parse(text, path) {
            prop_assert!(!e.file.is_empty());
            prop_assert!(e.to_string().starts_with(&e.file), "{}", e);
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(50_000))]

        /// Arbitrary bytes (as text).
        #[test]
        fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            check(&text, Path::new("examples/configs/fuzz.json"))?;
        }

        /// A valid example with bytes replaced, removed or inserted, or
        /// cut short.
        #[test]
        fn mutated_examples_never_panic(pick: usize, edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6)) {
            let ex = examples();
            let (path, text) = &ex[pick % ex.len()];
            let mut b = text.clone().into_bytes();
            for (at, byte, how) in edits {
                if b.is_empty() {
                    break;
                }
                let at = at % b.len();
                match how {
                    0 => b[at] = byte,
                    1 => {
                        b.remove(at);
                    }
                    2 => b.insert(at, byte),
                    _ => b.truncate(at),
                }
            }
            check(&String::from_utf8_lossy(&b), path)?;
        }
    }
}

#[cfg(test)]
mod duplicate_keys {
    use super::parse;
    use std::path::Path;

    #[test]
    fn a_key_given_twice_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/gateway-a.json");
        let good = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(parse(&good, &path).is_ok());
        let twice = good.replacen(r#""role": "#, r#""role": "ha", "role": "#, 1);
        assert_ne!(twice, good);
        let e = parse(&twice, &path).map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains(r#"key "role" appears twice in one object"#),
            "{e}"
        );
        assert!(e.contains("gateway-a.json"), "{e}");
    }
}

#[cfg(test)]
mod key_like_paths {
    use super::parse;
    use std::path::Path;

    /// A long absolute path is a path (CI checkouts and temporary
    /// directories are long); a key pasted as a relative path is refused
    /// without being shown.
    #[test]
    fn long_absolute_paths_are_paths_and_pasted_keys_are_not() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/gateway-a.json");
        let good = std::fs::read_to_string(&path).unwrap_or_default();
        let long = format!("/var/lib/{}/Bitsgw2/state", "deeply/nested".repeat(8));
        assert!(long.len() > 100);
        let with = |v: &str| {
            let mut j: serde_json::Value = serde_json::from_str(&good).unwrap_or_default();
            j["state_dir"] = v.into();
            parse(&j.to_string(), &path)
        };
        let cfg = with(&long).map_err(|e| e.to_string());
        assert_eq!(cfg.map(|c| c.state_dir), Ok(long.clone().into()));
        let key = "0x00112233445566778899aabbccddeeff01020304";
        let e = with(key).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("looks like a key, not a path"), "{e}");
        assert!(!e.contains(&key[4..]), "{e}");
    }
}

#[cfg(test)]
mod wireshark_keys {
    use super::parse;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};

    /// A directory of this test's own, removed when dropped.
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The keys file is taken relative to the configuration, a new one or
    /// an existing one of its owner's alone; one group or others may read
    /// is refused, naming the file, the entry and the field.
    #[test]
    fn a_keys_file_others_may_read_is_refused() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/gateway-a.json");
        let good = std::fs::read_to_string(&example).unwrap_or_default();
        let dir = Dir(std::env::temp_dir().join(format!("bitsgw-wskeys-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap_or_default();
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
        let config = dir.0.join("a.json");
        let mut j: serde_json::Value = serde_json::from_str(&good).unwrap_or_default();
        j["policy"] = policy
            .join(j["policy"].as_str().unwrap_or_default())
            .display()
            .to_string()
            .into();
        j["danger_wireshark_keys_file"] = "keys.esp_sa".into();
        let text = j.to_string();
        let keys = dir.0.join("keys.esp_sa");
        let parsed = parse(&text, &config).map_err(|e| e.to_string());
        assert_eq!(
            parsed.map(|c| c.wireshark_keys_file),
            Ok(Some(keys.clone()))
        );
        std::fs::write(&keys, "").unwrap_or_default();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap_or_default();
        assert!(parse(&text, &config).is_ok());
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap_or_default();
        let e = parse(&text, &config).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("a.json"), "{e}");
        assert!(e.contains("danger_wireshark_keys_file"), "{e}");
        assert!(e.contains("mode 640") && e.contains("chmod 600"), "{e}");
    }
}

#[cfg(test)]
mod wrong_shapes {
    //! Values of the wrong shape are refused at their path from the top
    //! of the file, in nested objects and lists too, without showing the
    //! value: a string where an object or a list belongs could be a key.

    use super::{fields, parse};
    use serde_json::{json, Value};
    use std::path::Path;

    const KEY: &str = "0x00112233445566778899aabbccddeeff01020304";

    /// An example, an edit of it, and words its error must contain.
    type Case<'a> = (&'a str, &'a dyn Fn(&mut Value), &'a [&'a str]);

    fn refused(example: &str, edit: impl Fn(&mut Value)) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/configs")
            .join(example);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut j: Value = serde_json::from_str(&text).unwrap_or_default();
        edit(&mut j);
        let e = parse(&j.to_string(), &path)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&KEY[4..]), "the key is echoed: {e}");
        e
    }

    #[test]
    fn wrong_shapes_name_the_path_and_never_the_value() {
        let cases: [Case; 6] = [
            (
                "gateway-a.json",
                &|j| j["ports"]["host"] = KEY.into(),
                &[r#"appliance: field "ports.host""#, "must be an object"],
            ),
            (
                "gateway-a.json",
                &|j| j["udp_encap_ports"] = KEY.into(),
                &[r#"field "udp_encap_ports""#, "must be a list of ports"],
            ),
            (
                "gateway-a.json",
                &|j| j["workers"] = KEY.into(),
                &[r#"field "workers""#, "masked"],
            ),
            (
                "gateway-a-routed.json",
                &|j| j["routes"]["network"]["routes"] = json!([KEY]),
                &[
                    r#"field "routes.network.routes[0]""#,
                    "must be a route like",
                ],
            ),
            (
                "ha.json",
                &|j| j["mobility"]["nodes"][0]["home"] = json!(5),
                &[r#"field "mobility.nodes[0].home""#, "must be a string"],
            ),
            (
                "mn.json",
                &|j| j["mobility"] = KEY.into(),
                &[r#"field "mobility""#, "must be an object"],
            ),
        ];
        for (example, edit, words) in cases {
            let e = refused(example, edit);
            for w in words {
                assert!(e.contains(w), "{example}: {e:?} lacks {w:?}");
            }
        }
    }

    /// A key pasted into a list of ports, EtherTypes or prefixes is named
    /// by its place, never echoed.
    #[test]
    fn list_items_of_the_wrong_kind_are_not_echoed() {
        let cases: [Case; 3] = [
            (
                "gateway-a.json",
                &|j| j["udp_encap_ports"] = json!([KEY]),
                &[r#"field "udp_encap_ports""#, "is not a port"],
            ),
            (
                "gateway-a.json",
                &|j| j["layer2"] = json!({"allow": [KEY]}),
                &["is not an EtherType"],
            ),
            (
                "ha.json",
                &|j| j["mobility"]["home_prefixes"] = json!([KEY]),
                &[
                    r#"field "mobility.home_prefixes[0]""#,
                    "is not an IPv6 prefix",
                ],
            ),
        ];
        for (example, edit, words) in cases {
            let e = refused(example, edit);
            for w in words {
                assert!(e.contains(w), "{example}: {e:?} lacks {w:?}");
            }
        }
    }

    /// `check` tells an appliance configuration without a role by these.
    #[test]
    fn the_field_list_is_the_structs() {
        let f = fields();
        for name in [
            "role", "policy", "ports", "layer2", "metrics", "user", "comment",
        ] {
            assert!(f.contains(&name), "{name} missing from {f:?}");
        }
        assert!(!f.contains(&"spd"));
    }
}
