//! SAs keyed by IKEv2 (`"keyed_by": "ike"`): the policy file names them
//! and gives their direction and mode, and the SPD protects with them as
//! with any SA; their SPI, transform and keys come from a CHILD_SA
//! negotiated by IKEv2 (RFC 7296 2.17) when one is established. Until then
//! the SPD entries that use them drop their packets (`no_sa`), never send
//! them in clear.
//!
//! ```json
//! {"name": "a-to-b", "direction": "outbound", "keyed_by": "ike",
//!  "mode": "tunnel", "tunnel": {"local": "gw_a", "remote": "gw_b"}}
//! ```

use super::*;

/// The fields an IKE-keyed SA may have: no SPI, transform or keys (IKE
/// negotiates them), no lifetime (IKE rekeys), no ESN or UDP
/// encapsulation (IKE decides).
const IKE_SA_FIELDS: &str =
    "name, direction, keyed_by, mode, tunnel, backend, replay_window, comment";

/// An SA whose SPI and keys IKEv2 negotiates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeKeyedSa {
    /// The SA's name (as the SPD and the peers refer to it).
    pub name: String,
    /// Direction.
    pub direction: Direction,
    /// Mode.
    pub mode: Mode,
    /// AES-GCM backend, or `auto`.
    pub backend: BackendSetting,
    /// Anti-replay window in packets (inbound).
    pub replay_window: u32,
    /// The destination of its ESP packets, checked inbound (RFC 4301 4.1);
    /// set when the file is validated.
    pub destination: Option<Addr>,
}

impl IkeKeyedSa {
    /// The parameters to install it with, keyed by a CHILD_SA: `enc_key`
    /// carries the AEAD's salt after the key (RFC 4106 8.1) as the stage
    /// expects. `udp_encap` when IKE detected a NAT (RFC 3948).
    pub fn keyed(
        &self,
        spi: u32,
        transform: TransformId,
        enc_key: Zeroizing<Vec<u8>>,
        auth_key: Zeroizing<Vec<u8>>,
        udp_encap: Option<UdpEncap>,
    ) -> SaParams {
        SaParams {
            name: self.name.clone(),
            direction: self.direction,
            spi,
            mode: self.mode,
            transform,
            backend: self.backend,
            enc_key,
            auth_key,
            replay_window: self.replay_window,
            esn: false,
            soft: Limits::default(),
            hard: Limits::default(),
            udp_encap,
            destination: self.destination,
            negotiated_keys: true,
        }
    }
}

/// An SA of the file with `"keyed_by": "ike"`; the fields IKE decides
/// are refused, each naming itself.
pub(super) fn parse_ike_keyed(
    ctx: &Ctx<'_>,
    raw: RawSa,
    names: &BTreeMap<String, IpAddr>,
) -> Result<IkeKeyedSa, ConfigError> {
    let decided_by_ike = [
        ("spi", raw.spi.is_some()),
        ("transform", raw.transform.is_some()),
        ("enc_key", raw.enc_key.is_some()),
        ("auth_key", raw.auth_key.is_some()),
        ("esn", raw.esn.is_some()),
        ("lifetime", raw.lifetime.is_some()),
        ("udp_encap", raw.udp_encap.is_some()),
    ];
    if let Some((field, _)) = decided_by_ike.iter().find(|(_, given)| *given) {
        return Err(ctx.err(
            field,
            format!(
                "unknown field for an IKE-keyed SA, whose SPI, transform, keys, lifetime, ESN and UDP encapsulation IKE negotiates (known: {IKE_SA_FIELDS})"
            ),
        ));
    }
    Ok(IkeKeyedSa {
        direction: parse_direction(ctx, &raw.direction)?,
        mode: parse_mode(ctx, raw.mode.as_deref(), raw.tunnel, names)?,
        backend: parse_backend(ctx, raw.backend.as_deref())?,
        replay_window: parse_replay_window(ctx, raw.replay_window)?,
        name: raw.name,
        destination: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(sad: &str, sa_out: &str) -> Result<PolicySet, ConfigError> {
        parse_policy(
            &format!(
                r#"{{"addresses": {{"gw_a": "203.0.113.1", "gw_b": "203.0.113.2"}},
                "spd": {{
                  "outbound": [{{"name": "out", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "{sa_out}"}}],
                  "inbound": [{{"name": "in", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "b-to-a"}}]
                }},
                "sad": [{sad}]}}"#
            ),
            "p.json",
        )
    }

    const BOTH: &str = r#"
        {"name": "a-to-b", "direction": "outbound", "keyed_by": "ike", "mode": "tunnel",
         "tunnel": {"local": "gw_a", "remote": "gw_b"}},
        {"name": "b-to-a", "direction": "inbound", "keyed_by": "ike", "mode": "tunnel",
         "tunnel": {"local": "gw_a", "remote": "gw_b"}, "replay_window": 128}"#;

    #[test]
    fn ike_keyed_sas_need_no_spi_or_keys_and_no_opt_in() {
        let set = policy(BOTH, "a-to-b").unwrap();
        assert!(set.sas.is_empty());
        assert_eq!(set.ike_sas.len(), 2);
        let inbound = set.ike_sa("b-to-a").unwrap();
        assert_eq!(inbound.direction, Direction::Inbound);
        assert_eq!(inbound.replay_window, 128);
        // The inbound SA's ESP must be addressed to the tunnel's local end.
        assert_eq!(
            inbound.destination,
            Some(Addr::from("203.0.113.1".parse::<IpAddr>().unwrap()))
        );
        // GCM keys from IKE are not static: no danger opt-in needed.
        let p = inbound.keyed(
            0x1234,
            TransformId::from_name("aes-gcm-128").unwrap(),
            Zeroizing::new(vec![7; 20]),
            Zeroizing::new(Vec::new()),
            None,
        );
        assert_eq!(p.spi, 0x1234);
        assert_eq!(p.name, "b-to-a");
    }

    #[test]
    fn ike_keyed_sas_refuse_keys_and_unknown_keyed_by() {
        let with_spi = BOTH.replacen(
            r#""keyed_by": "ike","#,
            r#""keyed_by": "ike", "spi": 300,"#,
            1,
        );
        let e = policy(&with_spi, "a-to-b").unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("sad[0] \"a-to-b\"", "spi")
        );
        let odd = BOTH.replacen(r#""keyed_by": "ike""#, r#""keyed_by": "hand""#, 1);
        let e = policy(&odd, "a-to-b").unwrap_err();
        assert_eq!(e.field, "keyed_by");
    }

    #[test]
    fn each_field_ike_decides_is_refused_by_name_and_read_errors_name_the_sa() {
        for (field, given) in [
            ("transform", r#""transform": "aes-gcm-128","#),
            ("enc_key", r#""enc_key": "00112233","#),
            ("esn", r#""esn": true,"#),
            ("lifetime", r#""lifetime": {"hard": {"seconds": 60}},"#),
            ("udp_encap", r#""udp_encap": {},"#),
        ] {
            let sad = BOTH.replacen(
                r#""keyed_by": "ike","#,
                &format!(r#""keyed_by": "ike", {given}"#),
                1,
            );
            let e = policy(&sad, "a-to-b").unwrap_err();
            assert_eq!(
                (e.entry.as_str(), e.field.as_str()),
                ("sad[0] \"a-to-b\"", field),
                "{e}"
            );
            assert!(e.problem.contains("IKE-keyed SA"), "{e}");
        }
        let odd = BOTH.replacen(r#""keyed_by": "ike""#, r#""keyed_by": 7"#, 1);
        let e = policy(&odd, "a-to-b").unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str(), e.problem.as_str()),
            (
                "sad[0] \"a-to-b\"",
                "keyed_by",
                "\"7\" is not \"ike\" or \"static\""
            )
        );
        let bad_window = BOTH.replacen(r#""replay_window": 128"#, r#""replay_window": "many""#, 1);
        let e = policy(&bad_window, "a-to-b").unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("sad[1] \"b-to-a\"", "replay_window"),
            "{e}"
        );
        // `static` is the default: such an SA needs its SPI and keys.
        let stated = BOTH.replacen(r#""keyed_by": "ike""#, r#""keyed_by": "static""#, 1);
        let e = policy(&stated, "a-to-b").unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str(), e.problem.as_str()),
            ("sad[0] \"a-to-b\"", "spi", "is required")
        );
    }

    #[test]
    fn spd_naming_an_unknown_sa_and_unused_ike_sa_are_refused() {
        let e = policy(BOTH, "nope").unwrap_err();
        assert_eq!(e.field, "sa");
        assert!(e.problem.contains("unknown SA name"), "{e}");
        let extra = format!(
            r#"{BOTH}, {{"name": "spare", "direction": "outbound", "keyed_by": "ike", "mode": "transport"}}"#
        );
        let e = policy(&extra, "a-to-b").unwrap_err();
        assert_eq!(
            (e.entry.as_str(), e.field.as_str()),
            ("sad \"spare\"", "name")
        );
    }
}
