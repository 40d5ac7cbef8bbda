//! Identities and proposals by name, as configurations write them.
//!
//! Proposals use strongSwan's notation: `aes128gcm16-prfsha256-ecp256`,
//! `aes256gcm16-prfsha256-x25519`, `aes128-sha256-prfsha256-ecp256` (IKE);
//! `aes128gcm16`, `aes256-sha256` (ESP). Identities are `fqdn:NAME`,
//! `ipv4:ADDR`, `ipv6:ADDR` or `keyid:HEX` (RFC 7296 3.5).

use crate::config::Identity;
use crate::suite::{DhGroup, Encryption, EspProposal, IkeProposal, Integrity, Prf};

/// One strongSwan-style algorithm keyword.
enum Word {
    Encr(Encryption),
    Integ(Integrity),
    Prf(Prf),
    Group(DhGroup),
}

fn word(w: &str) -> Result<Word, String> {
    Ok(match w {
        "aes128gcm16" | "aes128gcm128" => Word::Encr(Encryption::AES128_GCM16),
        "aes256gcm16" | "aes256gcm128" => Word::Encr(Encryption::AES256_GCM16),
        "aes128" => Word::Encr(Encryption::AES128_CBC),
        "aes256" => Word::Encr(Encryption::AES256_CBC),
        "sha256" | "sha2_256" => Word::Integ(Integrity::HmacSha256_128),
        "prfsha256" => Word::Prf(Prf::HmacSha256),
        "ecp256" | "modp_ecp256" => Word::Group(DhGroup::Ecp256),
        "x25519" | "curve25519" => Word::Group(DhGroup::Curve25519),
        _ => return Err(format!("unknown algorithm {w}")),
    })
}

/// An IKE SA proposal such as `aes128gcm16-prfsha256-ecp256`.
pub fn ike_proposal(s: &str) -> Result<IkeProposal, String> {
    let mut p = IkeProposal {
        encryption: vec![],
        integrity: vec![],
        prf: vec![],
        groups: vec![],
    };
    for w in s.split('-') {
        match word(w)? {
            Word::Encr(e) => p.encryption.push(e),
            Word::Integ(i) => p.integrity.push(i),
            Word::Prf(f) => p.prf.push(f),
            Word::Group(g) => p.groups.push(g),
        }
    }
    // strongSwan derives the PRF from the integrity algorithm when none is
    // named.
    if p.prf.is_empty() && !p.integrity.is_empty() {
        p.prf.push(Prf::HmacSha256);
    }
    Ok(p)
}

/// An ESP proposal such as `aes128gcm16` or `aes256-sha256`.
pub fn esp_proposal(s: &str) -> Result<EspProposal, String> {
    let mut p = EspProposal {
        encryption: vec![],
        integrity: vec![],
    };
    for w in s.split('-') {
        match word(w)? {
            Word::Encr(e) => p.encryption.push(e),
            Word::Integ(i) => p.integrity.push(i),
            _ => return Err(format!("{s}: {w} is not an ESP algorithm")),
        }
    }
    Ok(p)
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
        _ => return Err(bad(&"kind must be fqdn, ipv4, ipv6 or keyid")),
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
        let p = ike_proposal("aes128-sha256-ecp256").unwrap();
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert_eq!(p.groups, vec![DhGroup::Ecp256]);
        assert!(esp_proposal("aes128gcm16-ecp256").is_err());
        assert_eq!(
            identity("keyid:0a0b").unwrap(),
            Identity::KeyId(vec![10, 11])
        );
        assert!(identity("email:x").is_err());
        assert!(ike_proposal("des").is_err());
    }
}
