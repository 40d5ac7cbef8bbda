//! One SPD entry of a policy file: its selectors (addresses, ranges,
//! protocol, ports, ICMP and MH types by name) and its action.

use super::raw::{RawEntry, SaNames, Scalar};
use super::*;

/// Parses an address selector: any, a name, an address, a prefix or a range.
fn parse_addr_sel(
    ctx: &Ctx<'_>,
    field: &str,
    s: &str,
    names: &BTreeMap<String, IpAddr>,
) -> Result<AddrSel, ConfigError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("any") {
        return Ok(AddrSel::Any);
    }
    if let Some((a, len)) = s.split_once('/') {
        let a = resolve_addr(ctx, field, a, names)?;
        let len: u8 = len.parse().map_err(|_| {
            ctx.err(
                field,
                format!("prefix length {} is not a number", Shown(len)),
            )
        })?;
        return AddrSel::prefix(a, len)
            .ok_or_else(|| ctx.err(field, format!("prefix length {len} too long for {a}")));
    }
    if let Some((lo, hi)) = s.split_once('-') {
        if !names.contains_key(s) {
            let lo = resolve_addr(ctx, field, lo, names)?;
            let hi = resolve_addr(ctx, field, hi, names)?;
            return AddrSel::range(lo, hi).ok_or_else(|| {
                ctx.err(
                    field,
                    "range ends must be of one family, the first not above the second",
                )
            });
        }
    }
    Ok(AddrSel::single(resolve_addr(ctx, field, s, names)?))
}

fn parse_range(
    ctx: &Ctx<'_>,
    value: Option<&Scalar>,
    field: &str,
    max: u16,
    names: &dyn Fn(&str) -> Option<u16>,
) -> Result<Range16, ConfigError> {
    let any = Range16 { lo: 0, hi: max };
    let one = |s: &str| -> Result<u16, ConfigError> {
        let s = s.trim();
        if let Some(v) = names(&s.to_ascii_lowercase()) {
            return Ok(v);
        }
        parse_int(s)
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| *v <= max)
            .ok_or_else(|| {
                ctx.err(
                    field,
                    format!("{} is not a value from 0 to {max}", Shown(s)),
                )
            })
    };
    match value {
        None => Ok(any),
        Some(Scalar::Number(n)) => {
            let v = n
                .as_u64()
                .and_then(|v| u16::try_from(v).ok())
                .filter(|v| *v <= max)
                .ok_or_else(|| ctx.err(field, format!("must be from 0 to {max}")))?;
            Ok(Range16::single(v))
        }
        Some(Scalar::Text(s)) if s.eq_ignore_ascii_case("any") => Ok(any),
        Some(Scalar::Text(s)) => match s.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (one(lo)?, one(hi)?);
                if lo > hi {
                    return Err(ctx.err(field, "range is empty (first above second)"));
                }
                Ok(Range16 { lo, hi })
            }
            None => Ok(Range16::single(one(s)?)),
        },
    }
}

/// MH type names (RFC 6275 6.1.2 to 6.1.9).
fn mh_type_by_name(s: &str) -> Option<u16> {
    Some(match s {
        "brr" => 0,
        "hoti" => 1,
        "coti" => 2,
        "hot" => 3,
        "cot" => 4,
        "bu" => 5,
        "ba" => 6,
        "be" => 7,
        _ => return None,
    })
}

fn proto_by_name(s: &str) -> Option<u8> {
    Some(match s {
        "tcp" => proto::TCP,
        "udp" => proto::UDP,
        "icmp" => proto::ICMP,
        "icmpv6" | "ipv6-icmp" => proto::ICMPV6,
        "mh" | "ipv6-mh" | "mobility" => proto::MH,
        "esp" => proto::ESP,
        "ah" => proto::AH,
        "sctp" => proto::SCTP,
        "ipip" | "ipv4" => proto::IPV4,
        "ipv6" => proto::IPV6,
        _ => return None,
    })
}

pub(super) fn parse_entry(
    ctx: &Ctx<'_>,
    raw: RawEntry,
    names: &BTreeMap<String, IpAddr>,
) -> Result<EntryConfig, ConfigError> {
    let addr = |field, value: &Option<String>| -> Result<AddrSel, ConfigError> {
        match value {
            None => Ok(AddrSel::Any),
            Some(s) => parse_addr_sel(ctx, field, s, names),
        }
    };
    let local = addr("local", &raw.local)?;
    let remote = addr("remote", &raw.remote)?;
    if let (Some(a), Some(b)) = (local.family(), remote.family()) {
        if a != b {
            return Err(ctx.err(
                "remote",
                "local and remote are of different address families",
            ));
        }
    }
    let proto_sel = match &raw.proto {
        None => ProtoSel::Any,
        Some(Scalar::Number(n)) => ProtoSel::Is(
            n.as_u64()
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(|| ctx.err("proto", "must be from 0 to 255"))?,
        ),
        Some(Scalar::Text(s)) if s.eq_ignore_ascii_case("any") => ProtoSel::Any,
        Some(Scalar::Text(s)) => ProtoSel::Is(
            proto_by_name(&s.to_ascii_lowercase())
                .or_else(|| parse_int(s).and_then(|v| u8::try_from(v).ok()))
                .ok_or_else(|| ctx.err("proto", format!("unknown protocol {}", Shown(s))))?,
        ),
    };
    let none = |_: &str| None;
    let local_ports = parse_range(ctx, raw.local_port.as_ref(), "local_port", 0xffff, &none)?;
    let remote_ports = parse_range(ctx, raw.remote_port.as_ref(), "remote_port", 0xffff, &none)?;
    let icmp_type = parse_range(ctx, raw.icmp_type.as_ref(), "icmp_type", 0xff, &none)?;
    let icmp_code = parse_range(ctx, raw.icmp_code.as_ref(), "icmp_code", 0xff, &none)?;
    let mh_type = parse_range(ctx, raw.mh_type.as_ref(), "mh_type", 0xff, &mh_type_by_name)?;
    // A selector on a field the protocol does not have could never match.
    let p = match proto_sel {
        ProtoSel::Is(p) => Some(p),
        ProtoSel::Any => None,
    };
    let has_ports = matches!(p, Some(proto::TCP | proto::UDP | proto::SCTP));
    let is_icmp = matches!(p, Some(proto::ICMP | proto::ICMPV6));
    if (!local_ports.is_any(0xffff) || !remote_ports.is_any(0xffff)) && !has_ports {
        let f = if local_ports.is_any(0xffff) {
            "remote_port"
        } else {
            "local_port"
        };
        return Err(ctx.err(f, "ports need \"proto\" tcp, udp or sctp"));
    }
    if (!icmp_type.is_any(0xff) || !icmp_code.is_any(0xff)) && !is_icmp {
        let f = if icmp_type.is_any(0xff) {
            "icmp_code"
        } else {
            "icmp_type"
        };
        return Err(ctx.err(f, "ICMP type and code need \"proto\" icmp or icmpv6"));
    }
    if !mh_type.is_any(0xff) && p != Some(proto::MH) {
        return Err(ctx.err("mh_type", "an MH type needs \"proto\": \"mh\""));
    }
    let selector = Selector {
        local,
        remote,
        proto: proto_sel,
        local_ports,
        remote_ports,
        icmp_type,
        icmp_code,
        mh_type,
    };
    let action = match (raw.action.to_ascii_lowercase().as_str(), raw.sa) {
        ("protect", Some(SaNames(sas))) => {
            if sas.len() > crate::stage::MAX_BUNDLE {
                return Err(ctx.err(
                    "sa",
                    format!("bundles hold at most {} SAs", crate::stage::MAX_BUNDLE),
                ));
            }
            ActionConfig::Protect(sas)
        }
        ("protect", None) => return Err(ctx.err("sa", "a protect entry needs an SA name")),
        ("bypass" | "discard", Some(_)) => {
            return Err(ctx.err("sa", "only a protect entry names an SA"))
        }
        ("bypass", None) => ActionConfig::Bypass,
        ("discard", None) => ActionConfig::Discard,
        (other, _) => {
            return Err(ctx.err(
                "action",
                format!("{} is not protect, bypass or discard", Shown(other)),
            ))
        }
    };
    Ok(EntryConfig {
        name: raw.name,
        selector,
        action,
    })
}
