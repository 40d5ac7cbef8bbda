//! The `mobility` object of an appliance configuration: the `ha` role's
//! home agent and the `mn` role's mobile node settings.

use super::*;

/// RFC 6275 6.1.7: lifetimes are in units of 4 seconds in 16 bits.
const MAX_LIFETIME_SECS: u64 = 4 * 65535;

/// Addresses an IPv4 pool may hold, at most.
const MAX_POOL: u64 = 65536;

pub(super) fn v6_of(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

pub(super) fn v4_of(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// An address given as text (a literal or a policy name) that must be of
/// one family and unicast (`0.0.0.0` only where `unspecified_ok`).
pub(super) fn addr_text(
    ctx: &Ctx<'_>,
    field: &str,
    text: &str,
    names: &BTreeMap<String, IpAddr>,
    want_v6: bool,
    unspecified_ok: bool,
) -> Result<IpAddr, ConfigError> {
    let a = resolve_addr(ctx, field, text, names)?;
    let fam = if want_v6 { "IPv6" } else { "IPv4" };
    if a.is_ipv6() != want_v6 {
        return Err(ctx.err(
            field,
            format!("{} ({a}) is not an {fam} address", Shown(text)),
        ));
    }
    let broadcast = matches!(a, IpAddr::V4(v) if v.is_broadcast());
    if (a.is_unspecified() && !unspecified_ok) || a.is_multicast() || a.is_loopback() || broadcast {
        return Err(ctx.err(field, format!("{a} is not a unicast {fam} address")));
    }
    Ok(a)
}

/// An optional address field (see [`addr_text`]).
pub(super) fn addr_field(
    ctx: &Ctx<'_>,
    field: &str,
    text: Option<&str>,
    names: &BTreeMap<String, IpAddr>,
    want_v6: bool,
) -> Result<Option<IpAddr>, ConfigError> {
    text.map(|t| addr_text(ctx, field, t, names, want_v6, false))
        .transpose()
}

/// An optional integer field within `range`, or `default`.
pub(super) fn u64_in(
    ctx: &Ctx<'_>,
    field: &str,
    value: Option<Int>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let v = value.map_or(default, |Int(v)| v);
    if !range.contains(&v) {
        return Err(ctx.err(
            field,
            format!("{v} must be from {} to {}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

/// Where a mobile node is: "home", or an IPv6 or IPv4 care-of address
/// (the configuration's `attachment`, `bitsgw ctl move`, the replay's
/// `move` event).
pub fn parse_attachment(mn: &MnConfig, text: &str) -> Result<Attachment, String> {
    if text == "home" {
        return Ok(Attachment::Home);
    }
    let a: IpAddr = text.parse().map_err(|_| {
        format!(
            "{} is not \"home\", an IPv6 or an IPv4 care-of address",
            Shown(text)
        )
    })?;
    let broadcast = matches!(a, IpAddr::V4(v) if v.is_broadcast());
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() || broadcast {
        return Err(format!("{a} is not a unicast care-of address"));
    }
    // A care-of address must be reachable from the home agent (RFC 6275
    // 11.5.1 forms it from a prefix of the visited link): a link-local one
    // is not, and an IPv4-mapped IPv6 address is an IPv4 address in
    // disguise (RFC 5555 4.1 gives IPv4 care-of addresses their own
    // option).
    match a {
        IpAddr::V6(v) if v.is_unicast_link_local() => {
            return Err(format!(
                "{a} is a link-local address, not a care-of address"
            ))
        }
        IpAddr::V6(v) if v.to_ipv4_mapped().is_some() => {
            return Err(format!(
                "{a} is an IPv4-mapped IPv6 address; give the IPv4 care-of address itself"
            ))
        }
        IpAddr::V4(v) if v.is_link_local() => {
            return Err(format!(
                "{a} is a link-local address, not a care-of address"
            ))
        }
        _ => {}
    }
    match a {
        IpAddr::V6(v) if v.octets() == mn.home => Err(format!(
            "{a} is the home address (say \"home\" to return home)"
        )),
        IpAddr::V6(v) => Ok(Attachment::V6(v.octets())),
        IpAddr::V4(_) if mn.home_agent_v4.is_none() => Err(format!(
            "the IPv4 care-of address {a} needs the home agent's IPv4 address (mobility.home_agent_v4)"
        )),
        IpAddr::V4(v) => Ok(Attachment::V4(v.octets())),
    }
}

/// The `ha` role's `mobility` object; fields named relative to it.
pub(super) fn home_agent(
    ctx: &Ctx<'_>,
    m: RawHomeAgent,
    names: &BTreeMap<String, IpAddr>,
) -> Result<HaConfig, ConfigError> {
    let address = v6_of(addr_text(ctx, "address", &m.address, names, true, false)?);
    let address_v4 =
        addr_field(ctx, "address_v4", m.address_v4.as_deref(), names, false)?.map(v4_of);
    let mut home_prefixes = Vec::new();
    let prefixes = m
        .home_prefixes
        .map(|l| l.0)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            ctx.err(
                "home_prefixes",
                "is required: the home link's IPv6 prefixes, like [\"2001:db8:1::/64\"]",
            )
        })?;
    for (i, p) in prefixes.iter().enumerate() {
        let f = format!("home_prefixes[{i}]");
        let text = p.as_str().unwrap_or_default();
        let bad = || {
            ctx.err(
                &f,
                format!(
                    "{} is not an IPv6 prefix like \"2001:db8:1::/64\"",
                    shown_value(p)
                ),
            )
        };
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if !(1..=128).contains(&len) {
            return Err(ctx.err(&f, format!("prefix length {len} must be from 1 to 128")));
        }
        home_prefixes.push((addr.octets(), len));
    }
    let mut cfg = HaConfig {
        address,
        address_v4,
        home_prefixes,
        nodes: Vec::new(),
        ipv4_pool: Vec::new(),
        ipv4_prefix_len: u64_in(ctx, "ipv4_prefix_len", m.ipv4_prefix_len, 24, 1..=32)? as u8,
        max_lifetime: Duration::from_secs(u64_in(
            ctx,
            "max_lifetime_secs",
            m.max_lifetime_secs,
            600,
            4..=MAX_LIFETIME_SECS,
        )?),
        nat_refresh: Duration::from_secs(u64_in(
            ctx,
            "nat_refresh_secs",
            m.nat_refresh_secs,
            110,
            1..=65535,
        )?),
        force_udp: m.force_udp.is_some_and(|Flag(b)| b),
        key_management_mobility: m.key_management_mobility.is_some_and(|Flag(b)| b),
    };
    let nodes = m
        .nodes
        .map(|l| l.0)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            ctx.err(
                "nodes",
                "is required: the mobile nodes served, like [{\"home\": \"home_address_1\"}]",
            )
        })?;
    for (i, n) in nodes.iter().enumerate() {
        let f = format!("nodes[{i}]");
        let home = v6_of(addr_text(
            ctx,
            &format!("{f}.home"),
            &n.home,
            names,
            true,
            false,
        )?);
        let home_v4 = addr_field(
            ctx,
            &format!("{f}.home_v4"),
            n.home_v4.as_deref(),
            names,
            false,
        )?
        .map(v4_of);
        if !cfg.in_home_prefix(&home) {
            return Err(ctx.err(
                &format!("{f}.home"),
                format!("{} is in none of home_prefixes", Ipv6Addr::from(home)),
            ));
        }
        if cfg.nodes.iter().any(|o: &ServedNode| o.home == home) {
            return Err(ctx.err(
                &format!("{f}.home"),
                format!("{} is served twice", Ipv6Addr::from(home)),
            ));
        }
        if home_v4.is_some() && cfg.nodes.iter().any(|o| o.home_v4 == home_v4) {
            return Err(ctx.err(&format!("{f}.home_v4"), "is another node's too"));
        }
        cfg.nodes.push(ServedNode { home, home_v4 });
    }
    if !cfg.in_home_prefix(&cfg.address) {
        return Err(ctx.err(
            "address",
            format!(
                "{} is in none of home_prefixes (the home agent is on the home link)",
                Ipv6Addr::from(cfg.address)
            ),
        ));
    }
    let pool_err = |problem: String| ctx.err("ipv4_pool", problem);
    match &m.ipv4_pool {
        None | Some(Value::Null) => {}
        Some(Value::String(range)) => {
            let bad = || {
                pool_err(format!(
                    "{} is not a range like \"192.0.2.200-192.0.2.220\"",
                    Shown(range)
                ))
            };
            let (a, b) = range.split_once('-').ok_or_else(bad)?;
            let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b || u64::from(b - a) >= MAX_POOL {
                return Err(pool_err(format!(
                    "{} must go upwards and hold at most {MAX_POOL} addresses",
                    Shown(range)
                )));
            }
            cfg.ipv4_pool = (a..=b).map(|x| x.to_be_bytes()).collect();
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("ipv4_pool[{i}]");
                let text = item
                    .as_str()
                    .ok_or_else(|| ctx.err(&f, "must be an IPv4 address"))?;
                cfg.ipv4_pool
                    .push(v4_of(addr_text(ctx, &f, text, names, false, false)?));
            }
        }
        Some(_) => {
            return Err(pool_err(
                "must be a list of IPv4 addresses or a range like \"192.0.2.200-192.0.2.220\""
                    .into(),
            ))
        }
    }
    for a in &cfg.ipv4_pool {
        if Ipv4Addr::from(*a).is_unspecified() || Ipv4Addr::from(*a).is_broadcast() {
            return Err(pool_err(format!(
                "{} can not be a home address",
                Ipv4Addr::from(*a)
            )));
        }
        if cfg.nodes.iter().any(|n| n.home_v4 == Some(*a)) {
            return Err(pool_err(format!(
                "{} is also a node's static home_v4",
                Ipv4Addr::from(*a)
            )));
        }
    }
    Ok(cfg)
}

/// Whether the mobility stage moves the IKE SA with the care-of address
/// (`key_management_mobility`, the K bit: see `bitsgw_mobility::keying`).
pub(super) fn key_management_mobility(m: Option<&MobilitySettings>) -> bool {
    match m {
        Some(MobilitySettings::HomeAgent(ha)) => ha.key_management_mobility,
        Some(MobilitySettings::MobileNode { config, .. }) => config.key_management_mobility,
        None => false,
    }
}

/// The `mn` role's `mobility` object; fields named relative to it.
pub(super) fn mobile_node(
    ctx: &Ctx<'_>,
    m: RawMobileNode,
    names: &BTreeMap<String, IpAddr>,
) -> Result<(MnConfig, Option<Attachment>), ConfigError> {
    let home = v6_of(addr_text(
        ctx,
        "home_address",
        &m.home_address,
        names,
        true,
        false,
    )?);
    let ha = v6_of(addr_text(
        ctx,
        "home_agent",
        &m.home_agent,
        names,
        true,
        false,
    )?);
    if home == ha {
        return Err(ctx.err("home_agent", "is the home address"));
    }
    let mut cfg = MnConfig::new(home, ha);
    cfg.home_agent_v4 = addr_field(
        ctx,
        "home_agent_v4",
        m.home_agent_v4.as_deref(),
        names,
        false,
    )?
    .map(v4_of);
    cfg.home_v4 = m
        .home_v4
        .as_deref()
        .map(|t| addr_text(ctx, "home_v4", t, names, false, true))
        .transpose()?
        .map(v4_of);
    let lifetime = u64_in(
        ctx,
        "lifetime_secs",
        m.lifetime_secs,
        420,
        4..=MAX_LIFETIME_SECS,
    )?;
    if lifetime % 4 != 0 {
        return Err(ctx.err(
            "lifetime_secs",
            format!("{lifetime} is not a multiple of 4 (RFC 6275 6.1.7: units of 4 seconds)"),
        ));
    }
    cfg.lifetime = Duration::from_secs(lifetime);
    cfg.udp_port = u64_in(ctx, "udp_port", m.udp_port, 4191, 1..=65535)? as u16;
    if matches!(cfg.udp_port, 500 | 4500) {
        // The host stack takes UDP 500 and 4500 to the care-of address
        // before the tunnel stage could (RFC 7296 2, RFC 3948 2.2).
        return Err(ctx.err(
            "udp_port",
            format!("{} is IKE's port, never the tunnel's", cfg.udp_port),
        ));
    }
    cfg.key_management_mobility = m.key_management_mobility.is_some_and(|Flag(b)| b);
    if let Some(c) = m.classifier.as_deref() {
        cfg.classifier = c.parse::<ClassifierMode>().map_err(|()| {
            ctx.err(
                "classifier",
                format!("{} is not api or heuristic", Shown(c)),
            )
        })?;
    }
    let attachment = m
        .attachment
        .as_deref()
        .map(|t| parse_attachment(&cfg, t).map_err(|p| ctx.err("attachment", p)))
        .transpose()?;
    Ok((cfg, attachment))
}
