//! Labs and debugging only: the keys of every CHILD_SA the IKE thread
//! installs, appended to a file (`"danger_wireshark_keys_file"`) in
//! Wireshark's ESP SA table format (its `esp_sa` UAT), as strongSwan's
//! save-keys plugin does, so that Wireshark or tshark can decrypt the ESP
//! (RFC 4303) of a capture. Whoever reads the file reads that traffic: it
//! is created 0600, and the keys go nowhere else.

use bitsgw_ike::ChildSaEstablished;
use bitsgw_ipsec::crypto::TransformId;
use bitsgw_ipsec::sa::Mode as SaMode;
use bitsgw_ipsec::selector::Family;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tracing::warn;
use zeroize::Zeroizing;

/// The open keys file.
pub(super) struct WiresharkKeys {
    file: File,
    path: PathBuf,
    /// A write failed: said once, not again for every CHILD_SA.
    failed: bool,
}

impl WiresharkKeys {
    /// Opens `path` for appending, creating it 0600; an existing file that
    /// group or others may use is refused (the configuration checked this
    /// too; the file may have changed since). Warns that keys go there.
    pub(super) fn open(path: &Path) -> Result<WiresharkKeys, String> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        // Keys never go where a symbolic link planted in the file's place
        // points.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "danger_wireshark_keys_file {}: a symbolic link; keys are not written there",
                path.display()
            ));
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("danger_wireshark_keys_file {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("danger_wireshark_keys_file {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_file() || mode & 0o077 != 0 {
            return Err(format!(
                "danger_wireshark_keys_file {}: not a regular file of its owner's alone (mode {mode:03o}); keys are not written there",
                path.display()
            ));
        }
        warn!(
            file = %path.display(),
            "danger_wireshark_keys_file is set: the keys of every CHILD_SA are written to this file, and whoever reads it can decrypt their traffic; for labs and debugging only"
        );
        Ok(WiresharkKeys {
            file,
            path: path.to_path_buf(),
            failed: false,
        })
    }

    /// Appends the two directions of CHILD_SA `c` (transform `t`, the
    /// policy's outbound SA in `mode`).
    pub(super) fn child_up(&mut self, c: &ChildSaEstablished, t: TransformId, mode: SaMode) {
        let family = esp_family(c, mode);
        let mut lines = Zeroizing::new(String::new());
        for (spi, keys) in [(c.inbound_spi, &c.inbound), (c.outbound_spi, &c.outbound)] {
            let encryption = [keys.encryption.expose(), keys.salt.expose()];
            let Some(line) = esp_sa_line(family, spi, t, &encryption, keys.integrity.expose())
            else {
                warn!(transform = t.name(), "danger_wireshark_keys_file: Wireshark has no name for this transform; keys not written");
                return;
            };
            lines.push_str(&line);
            lines.push('\n');
        }
        if let Err(e) = self.file.write_all(lines.as_bytes()) {
            if !self.failed {
                warn!(file = %self.path.display(), error = %e, "danger_wireshark_keys_file: keys not written");
            }
            self.failed = true;
        }
    }
}

/// The IP version of the header in front of the SA's ESP: the tunnel
/// endpoints' in tunnel mode, the traffic's own in transport mode (RFC
/// 4303 3.1); Wireshark matches an entry only to ESP of its version.
fn esp_family(c: &ChildSaEstablished, mode: SaMode) -> Family {
    let ip = match mode {
        SaMode::Tunnel { remote, .. } => return remote.family,
        SaMode::Transport => c.local_ts.first().map_or(c.remote.ip(), |ts| ts.start),
    };
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// One direction of an SA as a record of Wireshark's ESP SA table:
/// protocol, source, destination, SPI, encryption algorithm and key (the
/// `encryption` parts one after the other: the AES-GCM salt follows the
/// key, RFC 4106 8.1), authentication algorithm and key. Both addresses are "*": ESP inside the mobility tunnel and behind
/// a NAT carries other addresses than the IKE SA's. None for a transform
/// IKE does not negotiate here.
pub(crate) fn esp_sa_line(
    family: Family,
    spi: u32,
    t: TransformId,
    encryption: &[&[u8]],
    integrity: &[u8],
) -> Option<Zeroizing<String>> {
    let (encryption_name, authentication) = match t {
        TransformId::AesGcm128 | TransformId::AesGcm256 => {
            ("AES-GCM with 16 octet ICV [RFC4106]", "NULL")
        }
        TransformId::AesCbc128HmacSha256 | TransformId::AesCbc256HmacSha256 => {
            ("AES-CBC [RFC3602]", "HMAC-SHA-256-128 [RFC4868]")
        }
        TransformId::NullHmacSha256 => ("NULL", "HMAC-SHA-256-128 [RFC4868]"),
        TransformId::ChaCha20Poly1305 | TransformId::AesGmac128 | TransformId::AesGmac256 => {
            return None
        }
    };
    let protocol = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let mut line = Zeroizing::new(String::new());
    let _ = write!(
        line,
        r#""{protocol}","*","*","0x{spi:08x}","{encryption_name}","#
    );
    hex_field(&mut line, encryption);
    let _ = write!(line, r#","{authentication}","#);
    hex_field(&mut line, &[integrity]);
    Some(line)
}

/// `parts` one after the other as a quoted "0x..." field, or "" when empty.
fn hex_field(out: &mut String, parts: &[&[u8]]) {
    out.push('"');
    if parts.iter().any(|p| !p.is_empty()) {
        out.push_str("0x");
        for b in parts.iter().flat_map(|p| p.iter()) {
            let _ = write!(out, "{b:02x}");
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ike::crypto::{DirectionKeys, Secret};

    fn keys(encryption: &[u8], salt: &[u8], integrity: &[u8]) -> DirectionKeys {
        DirectionKeys {
            encryption: Secret::new(encryption.to_vec()),
            salt: Secret::new(salt.to_vec()),
            integrity: Secret::new(integrity.to_vec()),
        }
    }

    fn line(family: Family, spi: u32, t: TransformId, k: &DirectionKeys) -> Option<String> {
        let encryption = [k.encryption.expose(), k.salt.expose()];
        esp_sa_line(family, spi, t, &encryption, k.integrity.expose())
            .map(|l| l.as_str().to_string())
    }

    /// The record tshark takes as `-o uat:esp_sa:<record>`: an AES-GCM
    /// key with its salt after it and no authentication key.
    #[test]
    fn aes_gcm_record_carries_the_salt_after_the_key() {
        let k = keys(&[0x11; 16], &[0xa0, 0xa1, 0xa2, 0xa3], &[]);
        let want = r#""IPv6","*","*","0xc0ffee01","AES-GCM with 16 octet ICV [RFC4106]","0x11111111111111111111111111111111a0a1a2a3","NULL","""#;
        assert_eq!(
            line(Family::V6, 0xc0ff_ee01, TransformId::AesGcm128, &k).as_deref(),
            Some(want)
        );
    }

    #[test]
    fn aes_cbc_record_carries_the_hmac_key() {
        let k = keys(&[0x01; 16], &[], &[0x02; 32]);
        let want = format!(
            r#""IPv4","*","*","0x00000102","AES-CBC [RFC3602]","0x{}","HMAC-SHA-256-128 [RFC4868]","0x{}""#,
            "01".repeat(16),
            "02".repeat(32)
        );
        assert_eq!(
            line(Family::V4, 0x0102, TransformId::AesCbc128HmacSha256, &k),
            Some(want)
        );
    }
}
