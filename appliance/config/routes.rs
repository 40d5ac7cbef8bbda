//! Routed mode's settings: `mode` and `routes` (prefixes, next hops on
//! the link, default routes per family).

use super::*;
use bitsgw_pipeline::routed::prefix_contains;

/// The first address of `a/len` (host bits cleared).
pub(super) fn network_of(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// An address with a prefix length, like "192.0.2.0/24".
pub(super) fn prefix_text(
    ctx: &Ctx<'_>,
    field: &str,
    text: &str,
) -> Result<(IpAddr, u8), ConfigError> {
    let bad = || {
        ctx.err(
            field,
            format!(
                "{} is not a prefix like \"192.0.2.0/24\" or \"2001:db8::/48\"",
                Shown(text)
            ),
        )
    };
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(ctx.err(
            field,
            format!("prefix length {len} must be from 0 to {max}"),
        ));
    }
    Ok((addr, len))
}

/// A next hop on `side`: unicast, of `v6`'s family if given, on-link to
/// one of the appliance's addresses there.
pub(super) fn on_link_via(
    ctx: &Ctx<'_>,
    field: &str,
    text: &str,
    side: &str,
    own: &OwnAddresses,
    v6: Option<bool>,
) -> Result<IpAddr, ConfigError> {
    let via: IpAddr = text
        .parse()
        .map_err(|_| ctx.err(field, format!("{} is not an IP address", Shown(text))))?;
    if let Some(v6) = v6 {
        if via.is_ipv6() != v6 {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            return Err(ctx.err(field, format!("{via} is not an {fam} address")));
        }
    }
    let broadcast = matches!(via, IpAddr::V4(v) if v.is_broadcast());
    if via.is_unspecified() || via.is_multicast() || via.is_loopback() || broadcast {
        return Err(ctx.err(field, format!("{via} is not a unicast address")));
    }
    if own.addresses.iter().any(|(a, _)| *a == via) {
        return Err(ctx.err(field, format!("{via} is the appliance's own address")));
    }
    if !own
        .addresses
        .iter()
        .any(|(a, len)| prefix_contains(*a, *len, via))
    {
        return Err(ctx.err(
            field,
            format!("{via} is not on-link: in the prefix of none of addresses.{side}"),
        ));
    }
    Ok(via)
}

/// A side's `routes` list: `[{"prefix": "...", "via": "..."}]`.
pub(super) fn route_list(
    ctx: &Ctx<'_>,
    routes: Option<Vec<RawRoute>>,
    side: &str,
    own: &OwnAddresses,
    out: &mut Vec<Route>,
) -> Result<(), ConfigError> {
    for (i, r) in routes.unwrap_or_default().iter().enumerate() {
        let f = format!("routes.{side}.routes[{i}]");
        let (prefix, len) = prefix_text(ctx, &format!("{f}.prefix"), &r.prefix)?;
        let via = on_link_via(
            ctx,
            &format!("{f}.via"),
            &r.via,
            side,
            own,
            Some(prefix.is_ipv6()),
        )?;
        out.push(Route {
            prefix,
            len,
            via: Some(via),
        });
    }
    Ok(())
}

/// `mode` and `routes`: routed mode's checks and routes.
pub(super) fn mode_and_routes(
    ctx: &Ctx<'_>,
    mode: Option<&str>,
    routes: Option<RawRoutes>,
    ports: [&PortConfig; 2],
    own: [&OwnAddresses; 2],
) -> Result<(Mode, Option<RouteSettings>), ConfigError> {
    let mode = match mode.unwrap_or("inline") {
        "inline" => Mode::Inline,
        "routed" => Mode::Routed,
        other => return Err(ctx.err("mode", format!("{} is not inline or routed", Shown(other)))),
    };
    if mode == Mode::Inline {
        if routes.is_some() {
            return Err(ctx.err("routes", "is for routed mode only (\"mode\": \"routed\")"));
        }
        return Ok((mode, None));
    }
    for (side, p) in ["host", "network"].into_iter().zip(ports) {
        if let PortConfig::Tun { name } = p {
            return Err(ctx.err(
                "mode",
                format!("routed mode needs af_packet (Ethernet) ports; ports.{side} is the tun port {name}, which has no link layer"),
            ));
        }
    }
    for (side, o) in ["host", "network"].into_iter().zip(own) {
        if o.addresses.is_empty() {
            let why = if side == "host" {
                "the hosts' gateway"
            } else {
                "the source of the tunnel and of the appliance's ARP and neighbor solicitations"
            };
            return Err(ctx.err(
                &format!("addresses.{side}"),
                format!(
                    "routed mode needs the appliance's own addresses on the {side} side ({why})"
                ),
            ));
        }
    }
    let routes = routes.ok_or_else(|| {
        ctx.err(
            "routes",
            "is required in routed mode, like {\"network\": {\"default_via\": \"203.0.113.254\"}}",
        )
    })?;
    let mut out = RouteSettings::default();
    // Host side: the host addresses' prefixes are on-link.
    for (a, len) in &own[0].addresses {
        out.host.push(Route {
            prefix: network_of(*a, *len),
            len: *len,
            via: None,
        });
    }
    if let Some(h) = routes.host {
        route_list(ctx, h.routes.map(|l| l.0), "host", own[0], &mut out.host)?;
    }
    let n = routes.network.ok_or_else(|| {
        ctx.err(
            "routes.network",
            "is required in routed mode: the network side's default router, like {\"default_via\": \"203.0.113.254\"}",
        )
    })?;
    for (field, v6, text) in [
        ("default_via", false, &n.default_via),
        ("v6_default_via", true, &n.v6_default_via),
    ] {
        let Some(t) = text else {
            continue;
        };
        let via = on_link_via(
            ctx,
            &format!("routes.network.{field}"),
            t,
            "network",
            own[1],
            Some(v6),
        )?;
        let any: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        out.network.push(Route {
            prefix: any,
            len: 0,
            via: Some(via),
        });
    }
    if out.network.is_empty() {
        return Err(ctx.err(
            "routes.network",
            "needs default_via (IPv4) or v6_default_via (IPv6): where the network side's traffic goes",
        ));
    }
    route_list(
        ctx,
        n.routes.map(|l| l.0),
        "network",
        own[1],
        &mut out.network,
    )?;
    Ok((mode, Some(out)))
}
