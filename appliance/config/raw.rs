//! The appliance configuration as serde reads it, before any meaning is
//! given to its strings: every object refuses fields it does not know. The
//! conversion in the modules beside this one checks what the values mean.

use bitsgw_ipsec::config::{Flag, Int, ListHolds, ListOf};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawAppliance {
    pub role: String,
    pub policy: String,
    pub ports: RawPorts,
    pub mtu: Option<Int>,
    pub workers: Option<Int>,
    pub pipeline: Option<String>,
    pub queue_depth: Option<Int>,
    pub control_socket: Option<String>,
    /// A name or a gid ([`super::service::group_id`]).
    pub control_socket_group: Option<Value>,
    pub on_link_loss: Option<String>,
    pub state_dir: Option<String>,
    pub udp_encap_ports: Option<ListOf<Value, Ports>>,
    pub icmp_source_v4: Option<String>,
    pub icmp_source_v6: Option<String>,
    pub addresses: Option<RawOwnAddresses>,
    /// [`RawHomeAgent`] or [`RawMobileNode`], by role.
    pub mobility: Option<Value>,
    pub mode: Option<String>,
    pub routes: Option<RawRoutes>,
    pub layer2: Option<RawLayer2>,
    pub metrics: Option<RawMetrics>,
    /// A name or a uid ([`super::service::user_ids`]).
    pub user: Option<Value>,
    /// Each read as a [`RawPeer`] on its own, so that its errors name it.
    pub peers: Option<ListOf<Value, Peers>>,
    /// Labs and debugging only ([`super::wireshark_keys_file`]).
    pub danger_wireshark_keys_file: Option<String>,
    #[serde(rename = "comment")]
    pub _comment: Option<IgnoredAny>,
}

/// The two ports.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with host and network")]
pub(crate) struct RawPorts {
    pub host: Option<RawPort>,
    pub network: Option<RawPort>,
}

/// One port.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with type and interface or name"
)]
pub(crate) struct RawPort {
    #[serde(rename = "type")]
    pub kind: String,
    pub interface: Option<String>,
    pub name: Option<String>,
}

/// The appliance's own addresses per side, and the MACs it answers with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawOwnAddresses {
    pub host: Option<ListOf<String, AddressesWithPrefix>>,
    pub network: Option<ListOf<String, AddressesWithPrefix>>,
    pub host_mac: Option<String>,
    pub network_mac: Option<String>,
}

/// Routed mode's routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with host and network")]
pub(crate) struct RawRoutes {
    pub host: Option<RawHostRoutes>,
    pub network: Option<RawNetworkRoutes>,
}

/// The host side's routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with routes")]
pub(crate) struct RawHostRoutes {
    pub routes: Option<ListOf<RawRoute, Routes>>,
}

/// The network side's default routers and routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawNetworkRoutes {
    pub default_via: Option<String>,
    pub v6_default_via: Option<String>,
    pub routes: Option<ListOf<RawRoute, Routes>>,
}

/// One route.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route like {\"prefix\": \"10.1.0.0/16\", \"via\": \"192.0.2.2\"}"
)]
pub(crate) struct RawRoute {
    pub prefix: String,
    pub via: String,
}

/// Which non-IP frames pass inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawLayer2 {
    pub pass_unknown: Option<Flag>,
    pub allow: Option<ListOf<Value, EtherTypes>>,
}

/// The metrics endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
    pub allow_remote: Option<Flag>,
}

/// The `ha` role's `mobility` object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawHomeAgent {
    pub address: String,
    pub address_v4: Option<String>,
    pub home_prefixes: Option<ListOf<Value, Ipv6Prefixes>>,
    pub nodes: Option<ListOf<RawServedNode, MobileNodes>>,
    /// A range string or a list of addresses.
    pub ipv4_pool: Option<Value>,
    pub ipv4_prefix_len: Option<Int>,
    pub max_lifetime_secs: Option<Int>,
    pub nat_refresh_secs: Option<Int>,
    pub force_udp: Option<Flag>,
    pub key_management_mobility: Option<Flag>,
}

/// One mobile node a home agent serves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with home and home_v4")]
pub(crate) struct RawServedNode {
    pub home: String,
    pub home_v4: Option<String>,
}

/// The `mn` role's `mobility` object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct RawMobileNode {
    pub home_address: String,
    pub home_agent: String,
    pub home_agent_v4: Option<String>,
    pub home_v4: Option<String>,
    pub lifetime_secs: Option<Int>,
    pub udp_port: Option<Int>,
    pub classifier: Option<String>,
    pub attachment: Option<String>,
    pub key_management_mobility: Option<Flag>,
}

/// One IKEv2 peer ([`super::peers`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a peer object")]
pub(crate) struct RawPeer {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub local_id: String,
    pub remote_id: String,
    pub auth: Option<String>,
    pub psk_file: Option<String>,
    pub certificate_file: Option<String>,
    pub private_key_file: Option<String>,
    pub ca_files: Option<ListOf<String, FileNames>>,
    pub ike_proposals: Option<ListOf<String, ProposalNames>>,
    pub esp_proposals: Option<ListOf<String, ProposalNames>>,
    pub ike_lifetime_secs: Option<Int>,
    pub child_lifetime_secs: Option<Int>,
    pub rekey_jitter_secs: Option<Int>,
    pub liveness_secs: Option<Int>,
    pub retransmit_tries: Option<Int>,
    pub nat_keepalive_secs: Option<Int>,
    pub start: Option<String>,
    pub children: Option<ListOf<RawChild, Children>>,
    #[serde(rename = "comment")]
    pub _comment: Option<IgnoredAny>,
}

/// A CHILD_SA of a peer: the policy's SAs it keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object with outbound and inbound")]
pub(crate) struct RawChild {
    pub outbound: String,
    pub inbound: String,
}

/// What the lists hold, for their errors.
macro_rules! list_items {
    ($($name:ident: $what:expr;)*) => {$(
        pub(crate) struct $name;
        impl ListHolds for $name {
            const WHAT: &'static str = $what;
        }
    )*};
}

list_items! {
    Ports: "ports";
    AddressesWithPrefix: "addresses with prefix lengths";
    Routes: "routes like {\"prefix\": \"10.1.0.0/16\", \"via\": \"192.0.2.2\"}";
    EtherTypes: "EtherTypes";
    Ipv6Prefixes: "IPv6 prefixes";
    MobileNodes: "mobile nodes";
    Peers: "peers";
    ProposalNames: "names";
    FileNames: "file names";
    Children: "children";
}
