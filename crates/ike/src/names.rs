//! Identities and proposals by name, as configurations write them.
//!
//! Proposals use strongSwan's notation: `aes128gcm16-prfsha256-ecp256`,
//! `aes256gcm16-prfsha256-x25519`, `aes128-sha256-prfsha256-ecp256` (IKE);
//! `aes128gcm16`, `aes256-sha256` (ESP). Identities are `fqdn:NAME`,
//! `ipv4:ADDR`, `ipv6:ADDR`, `keyid:HEX` or `dn:HEX` (a distinguished
//! name's DER, as in a certificate's subject; RFC 7296 3.5).

use crate::config::Identity;
use crate::suite::{EspProposal, IkeProposal};

/// An IKE SA proposal such as `aes128gcm16-prfsha256-ecp256` (the
/// library's reading of strongSwan's notation, [`IkeProposal`]'s
/// `FromStr`).
pub fn ike_proposal(s: &str) -> Result<IkeProposal, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// An ESP proposal such as `aes128gcm16`, `aes256-sha256` or, with PFS on
/// rekeys, `aes128gcm16-x25519`.
pub fn esp_proposal(s: &str) -> Result<EspProposal, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// An identity such as `fqdn:gw-a.example` or `ipv4:203.0.113.1`.
pub fn identity(s: &str) -> Result<Identity, String> {
    let (kind, v) = s
        .split_once(':')
        .ok_or(format!("identity {s}: expected KIND:VALUE"))?;
    let bad = |e: &dyn std::fmt::Display| format!("identity {s}: {e}");
    Ok(match kind {
        "fqdn" => Identity::Fqdn(v.to_string()),
        "ipv4" => Identity::Ipv4(v.parse().map_err(|e| bad(&e))?),
        "ipv6" => Identity::Ipv6(v.parse().map_err(|e| bad(&e))?),
        "keyid" => Identity::KeyId(hex_decode(v).ok_or(bad(&"not hex"))?),
        "dn" => Identity::Dn(hex_decode(v).ok_or(bad(&"not hex"))?),
        _ => return Err(bad(&"kind must be fqdn, ipv4, ipv6, keyid or dn")),
    })
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        use crate::suite::{DhGroup, Prf};
        let p = ike_proposal("aes128-sha256-ecp256").unwrap();
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert_eq!(p.groups, vec![DhGroup::Ecp256]);
        assert!(esp_proposal("aes128gcm16-prfsha256").is_err());
        assert_eq!(
            identity("keyid:0a0b").unwrap(),
            Identity::KeyId(vec![10, 11])
        );
        assert_eq!(identity("dn:3000").unwrap(), Identity::Dn(vec![0x30, 0]));
        assert!(identity("dn:30z0").is_err());
        assert!(identity("email:x").is_err());
        assert!(ike_proposal("des").is_err());
    }
}
