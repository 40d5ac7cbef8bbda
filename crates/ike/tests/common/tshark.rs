//! An independent decoder for the IKE and ESP a test captured: tshark,
//! given the SAs' keys through its IKEv2 decryption table and its ESP SA
//! table, decrypts every IKE message's Encrypted payload (RFC 7296 3.14)
//! and every ESP packet (RFC 4303) and checks their ICVs. The keys come
//! from charon's log at level 4, which dumps every key it derives
//! (libstrongswan's `%B` hex dumps).
//!
//! Shared by the IKE crate's strongSwan tests and the workspace's IKE labs
//! (included there by path); it needs nothing but std.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// The IKE message payload types (RFC 7296 3.2) the checks name.
pub mod payload {
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
}

/// The exchange types (RFC 7296 3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
}

/// The octets charon logged after the last `label` ("encryption
/// initiator key"), in hex; see [`logged_keys`].
pub fn logged_key(log: &str, label: &str) -> Option<String> {
    logged_keys(log, label).pop()
}

/// Every dump charon logged after `label`, oldest first, in hex: a line
/// "LABEL => N bytes @ 0x...", then lines of "OFFSET: XX XX ...  ascii"
/// (libstrongswan's %B format, 16 octets a line).
pub fn logged_keys(log: &str, label: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let header = format!("{label} => ");
    lines
        .iter()
        .enumerate()
        .filter_map(|(at, line)| {
            let rest = &line[line.find(&header)? + header.len()..];
            let n: usize = rest.split_whitespace().next()?.parse().ok()?;
            let mut out = String::new();
            for l in &lines[at + 1..] {
                if out.len() >= 2 * n {
                    break;
                }
                // "...   0: 12 34 ..." or "   0: 12 34 ...": after
                // "OFFSET: ", 47 characters of hex and spaces.
                let colon = l.find(": ")?;
                let (offset, dump) = (&l[..colon], &l[colon + 2..]);
                offset.trim().rsplit(' ').next()?.parse::<usize>().ok()?;
                let hexpart: String = dump.chars().take(47).collect();
                for b in hexpart.split_whitespace() {
                    if out.len() < 2 * n {
                        out.push_str(&b.to_ascii_lowercase());
                    }
                }
            }
            (out.len() == 2 * n).then_some(out)
        })
        .collect()
}

/// tshark's names for the transforms of a strongSwan-notation proposal's
/// first algorithms: (IKEv2 encryption, IKEv2 integrity, ESP encryption,
/// ESP authentication).
pub fn algorithms(proposal: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    let mut parts = proposal.split('-');
    let encr = parts.next().unwrap_or_default();
    let gcm = |ike| {
        (
            ike,
            "NONE [RFC4306]",
            "AES-GCM with 16 octet ICV [RFC4106]",
            "NULL",
        )
    };
    let cbc_sha256 = |ike| {
        (
            ike,
            "HMAC_SHA2_256_128 [RFC4868]",
            "AES-CBC [RFC3602]",
            "HMAC-SHA-256-128 [RFC4868]",
        )
    };
    match (encr, parts.next()) {
        ("aes128gcm16", _) => gcm("AES-GCM-128 with 16 octet ICV [RFC5282]"),
        ("aes256gcm16", _) => gcm("AES-GCM-256 with 16 octet ICV [RFC5282]"),
        ("aes128", Some("sha256")) => cbc_sha256("AES-CBC-128 [RFC3602]"),
        ("aes256", Some("sha256")) => cbc_sha256("AES-CBC-256 [RFC3602]"),
        _ => panic!("no tshark names for proposal {proposal}"),
    }
}

/// One IKE SA's entry in tshark's IKEv2 decryption table.
#[derive(Clone, Debug)]
pub struct IkeSaKeys {
    /// The SPIs, 16 hex digits each.
    pub spi_i: String,
    pub spi_r: String,
    pub sk_ei: String,
    pub sk_er: String,
    pub sk_ai: String,
    pub sk_ar: String,
    /// tshark's names, from [`algorithms`].
    pub encryption: &'static str,
    pub integrity: &'static str,
}

impl IkeSaKeys {
    /// The IKE SA `spi_i`/`spi_r` with the keys charon logged for the
    /// `nth` IKE SA it derived keys for (0 the first); AEAD transforms have
    /// no SK_a*.
    pub fn from_charon_log(
        log: &str,
        nth: usize,
        spi_i: &str,
        spi_r: &str,
        proposal: &str,
    ) -> Option<IkeSaKeys> {
        let (encryption, integrity, _, _) = algorithms(proposal);
        let key = |label: &str| logged_keys(log, label).get(nth).cloned();
        let aead = integrity.starts_with("NONE");
        let (sk_ai, sk_ar) = if aead {
            (String::new(), String::new())
        } else {
            (key("Sk_ai secret")?, key("Sk_ar secret")?)
        };
        Some(IkeSaKeys {
            spi_i: spi_i.to_string(),
            spi_r: spi_r.to_string(),
            sk_ei: key("Sk_ei secret")?,
            sk_er: key("Sk_er secret")?,
            sk_ai,
            sk_ar,
            encryption,
            integrity,
        })
    }

    /// The octet fields are bare hex in a UAT record, the names quoted.
    fn uat(&self) -> String {
        format!(
            r#"uat:ikev2_decryption_table:{},{},{},{},"{}",{},{},"{}""#,
            self.spi_i,
            self.spi_r,
            self.sk_ei,
            self.sk_er,
            self.encryption,
            self.sk_ai,
            self.sk_ar,
            self.integrity
        )
    }
}

/// One ESP SA's entry in tshark's ESP SA table.
#[derive(Clone, Debug)]
pub struct EspSaKeys {
    pub src: String,
    pub dst: String,
    /// The SPI, 8 hex digits.
    pub spi: String,
    /// The encryption key, with the salt for AES-GCM (RFC 4106 8.1).
    pub encryption_key: String,
    pub integrity_key: String,
    pub encryption: &'static str,
    pub integrity: &'static str,
}

impl EspSaKeys {
    fn uat(&self) -> String {
        let key = |k: &str| {
            if k.is_empty() {
                String::new()
            } else {
                format!("0x{k}")
            }
        };
        format!(
            r#"uat:esp_sa:"IPv4","{}","{}","0x{}","{}","{}","{}","{}""#,
            self.src,
            self.dst,
            self.spi,
            self.encryption,
            key(&self.encryption_key),
            self.integrity,
            key(&self.integrity_key)
        )
    }
}

/// One IKE or ESP message as tshark decoded it.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub frame: u32,
    /// IKE: the exchange type, whether a response, the payload types in
    /// order (the Encrypted payload's inner ones after it, when tshark
    /// decrypted it), whether it carried decrypted data and the
    /// Integrity Checksum Data verdict tshark printed.
    pub exchange: Option<u8>,
    pub response: bool,
    pub payloads: Vec<u8>,
    pub decrypted: bool,
    pub icd_correct: bool,
    /// ESP: the SPI and whether tshark found its ICV good.
    pub esp_spi: Option<String>,
    pub esp_icv_good: bool,
    /// `_ws.malformed` or any expert message of severity warning or
    /// error, and every expert message, for the failure report.
    pub malformed: bool,
    pub expert: Vec<String>,
}

/// Decodes `capture` with `ike` and `esp`; one entry per IKE message or
/// ESP packet, in capture order.
pub fn decode(capture: &Path, ike: &[IkeSaKeys], esp: &[EspSaKeys]) -> Vec<Decoded> {
    let mut args: Vec<String> = [
        "-r",
        capture.to_str().unwrap(),
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
        "-V",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    for k in ike {
        args.extend(["-o".into(), k.uat()]);
    }
    for k in esp {
        args.extend(["-o".into(), k.uat()]);
    }
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark is installed by scripts/setup-test-deps.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields = fields(capture, &args);
    fields
        .into_iter()
        .map(|mut d| {
            d.icd_correct = verdicts(&text, d.frame);
            d
        })
        .collect()
}

/// The fields of each frame that holds IKE or ESP.
fn fields(capture: &Path, options: &[String]) -> Vec<Decoded> {
    let mut args: Vec<String> = options.iter().filter(|a| *a != "-V").cloned().collect();
    for f in [
        "frame.number",
        "isakmp.exchangetype",
        "isakmp.flag_r",
        "isakmp.typepayload",
        "isakmp.enc.decrypted",
        "esp.spi",
        "esp.icv_good",
        "_ws.malformed",
        "_ws.expert.severity",
        "_ws.expert.message",
    ] {
        args.extend(["-e".into(), f.into()]);
    }
    args.extend(
        [
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=;",
            "-Y",
            "isakmp || esp",
        ]
        .map(String::from),
    );
    let out = Command::new("tshark").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "tshark fields of {}: {}",
        capture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            let list = |i: usize| -> Vec<&str> {
                f.get(i)
                    .map(|s| s.split(';').filter(|x| !x.is_empty()).collect())
                    .unwrap_or_default()
            };
            // Severities: 0x00600000 warning, 0x00800000 error.
            let severe = list(8).iter().any(|s| {
                let s = s.trim_start_matches("0x");
                u32::from_str_radix(s, 16).is_ok_and(|v| v >= 0x0060_0000)
                    || s.parse::<u32>().is_ok_and(|v| v >= 0x0060_0000)
            });
            Decoded {
                frame: f[0].parse().unwrap(),
                exchange: list(1).first().and_then(|s| s.parse().ok()),
                response: list(2).first().is_some_and(|s| *s == "1" || *s == "True"),
                payloads: list(3).iter().filter_map(|s| s.parse().ok()).collect(),
                decrypted: !list(4).is_empty(),
                icd_correct: false,
                esp_spi: list(5)
                    .first()
                    .map(|s| s.trim_start_matches("0x").to_string()),
                esp_icv_good: list(6).first().is_some_and(|s| *s == "1" || *s == "True"),
                malformed: !list(7).is_empty() || severe,
                expert: list(9).iter().map(|s| (*s).to_string()).collect(),
            }
        })
        .collect()
}

/// Whether frame `frame` of tshark's verbose output has an Integrity
/// Checksum Data verdict and all of them say "[correct]".
fn verdicts(text: &str, frame: u32) -> bool {
    let start = format!("Frame {frame}:");
    let Some(at) = text.find(&start) else {
        return false;
    };
    let rest = &text[at + start.len()..];
    let body = &rest[..rest.find("\nFrame ").unwrap_or(rest.len())];
    let icd: Vec<&str> = body
        .lines()
        .filter(|l| l.contains("Integrity Checksum Data"))
        .collect();
    !icd.is_empty() && icd.iter().all(|l| l.contains("[correct]"))
}

/// The payload types of message `d`, without the proposals' and
/// transforms' substructures (types 2 and 3) tshark lists among them.
fn payload_types(d: &Decoded) -> Vec<u8> {
    d.payloads.iter().copied().filter(|p| *p >= 33).collect()
}

/// Checks every IKE message of `decoded`: none malformed or with an
/// expert warning, each one after IKE_SA_INIT an Encrypted payload that
/// tshark decrypted and whose checksum it found correct, and each
/// exchange's payloads those RFC 7296 1.2-1.4 require. Returns the number
/// of IKE messages of each exchange type.
pub fn check_ike(decoded: &[Decoded]) -> Result<std::collections::BTreeMap<u8, usize>, String> {
    use payload::*;
    let mut counts = std::collections::BTreeMap::new();
    for d in decoded {
        let Some(x) = d.exchange else { continue };
        *counts.entry(x).or_insert(0) += 1;
        let types = payload_types(d);
        let fail = |why: &str| Err(format!("frame {}: {why}: {d:?}", d.frame));
        if d.malformed {
            return fail("malformed or flagged by tshark");
        }
        let has = |wanted: &[u8]| wanted.iter().all(|w| types.contains(w));
        if x == exchange::IKE_SA_INIT {
            // A response may be only a COOKIE or INVALID_KE_PAYLOAD notify
            // (RFC 7296 2.6, 1.3).
            let refusal = d.response && types == [NOTIFY];
            if !refusal && !has(&[SA, KE, NONCE]) {
                return fail("IKE_SA_INIT without SA, KE and Nonce");
            }
            continue;
        }
        if types.first() != Some(&SK) || !d.decrypted {
            return fail("not an Encrypted payload tshark decrypted");
        }
        if !d.icd_correct {
            return fail("Encrypted payload's checksum not correct");
        }
        let inner = match (x, d.response) {
            (exchange::IKE_AUTH, false) => &[IDI, AUTH, SA, TSI, TSR][..],
            (exchange::IKE_AUTH, true) => &[IDR, AUTH, SA, TSI, TSR][..],
            (exchange::CREATE_CHILD_SA, _) => &[SA, NONCE][..],
            (exchange::INFORMATIONAL, _) => &[][..],
            _ => return fail("unexpected exchange type"),
        };
        if !has(inner) {
            return fail(&format!("payloads {inner:?} expected"));
        }
    }
    Ok(counts)
}

/// Checks every ESP packet of `decoded`: not malformed, of an SA in
/// `spis` (8 hex digits each), ICV good (`esp.icv_good == 1`). Returns the
/// number of packets of each SPI.
pub fn check_esp(
    decoded: &[Decoded],
    spis: &[&str],
) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let mut counts = std::collections::BTreeMap::new();
    for d in decoded {
        let Some(spi) = &d.esp_spi else { continue };
        if d.malformed || !spis.contains(&spi.as_str()) || !d.esp_icv_good {
            return Err(format!("frame {}: ESP not verified: {d:?}", d.frame));
        }
        *counts.entry(spi.clone()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// `hex` with its first digit changed: a key one bit or more away.
pub fn corrupt(hex: &mut String) {
    if !hex.is_empty() {
        let digit = if hex.starts_with('0') { "1" } else { "0" };
        hex.replace_range(..1, digit);
    }
}
