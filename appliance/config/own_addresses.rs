//! The appliance's own addresses on each side ("own_addresses"), which
//! its host stack answers for, and the MAC it answers with.

use super::*;

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

pub(super) fn own_addresses(
    ctx: &Ctx<'_>,
    raw: Option<RawOwnAddresses>,
) -> Result<[OwnAddresses; 2], ConfigError> {
    let mut out = [OwnAddresses::default(), OwnAddresses::default()];
    let Some(a) = raw else {
        return Ok(out);
    };
    for (i, (side, list, mac)) in [
        ("host", a.host, a.host_mac),
        ("network", a.network, a.network_mac),
    ]
    .into_iter()
    .enumerate()
    {
        let field = format!("addresses.{side}");
        if let Some(list) = list.map(|l| l.0) {
            if list.len() > MAX_OWN_ADDRESSES {
                return Err(ctx.err(
                    &field,
                    format!(
                        "has {} addresses, at most {MAX_OWN_ADDRESSES} are supported",
                        list.len()
                    ),
                ));
            }
            for (n, text) in list.iter().enumerate() {
                let f = format!("{field}[{n}]");
                let bad = || {
                    ctx.err(&f, format!("{} is not an address with a prefix length (like \"192.0.2.1/24\" or \"2001:db8::1/64\")", Shown(text)))
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
        if let Some(m) = mac {
            let mac = parse_mac(&m).ok_or_else(|| {
                ctx.err(
                    &format!("addresses.{side}_mac"),
                    format!(
                        "{} is not a unicast MAC address like \"02:00:00:00:00:01\"",
                        Shown(&m)
                    ),
                )
            })?;
            out[i].mac = Some(mac);
        }
    }
    Ok(out)
}
