//! The state file of sequence-number leases (see `bitsgw_pipeline::lease`).
//!
//! One line per key stream: the stream's identity (a SHA-256 over a label,
//! the SPI and the keys, which does not reveal the keys) and the highest
//! sequence number ever leased under it. A lease is written to a temporary
//! file, synced, renamed over the state file and the directory synced
//! before any of its numbers is used, so after a restart (a SIGKILL or a
//! power cut included) every SA resumes above anything it ever sent, and a
//! peer's anti-replay window keeps accepting its packets. The directory
//! holds a lock so that two appliances can not share (and clobber) it.

use bitsgw_ipsec::LeaseRequest;
use bitsgw_pipeline::lease::{Lease, LeaseError, LeaseKeeper};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The state file's name in the state directory.
pub const LEASE_FILE: &str = "sequence-leases";

/// The first line of the state file.
const HEADER: &str = "# bitsgw sequence leases v1: identity ceiling";

/// Leases kept in a state directory.
#[derive(Debug)]
pub struct FileLeases {
    dir: PathBuf,
    path: PathBuf,
    ceilings: Mutex<BTreeMap<[u8; 32], u64>>,
    /// Held (locked) for as long as the appliance runs.
    _lock: File,
}

fn hex(id: &[u8; 32]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_line(line: &str) -> Option<([u8; 32], u64)> {
    let (id, ceiling) = line.split_once(' ')?;
    if id.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(id.as_bytes().chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some((out, ceiling.trim().parse().ok()?))
}

impl FileLeases {
    /// Opens (creating it, mode 0700) the state directory `dir`, locks it
    /// and loads its leases. A state file that can not be read or parsed
    /// is an error: starting without it could reuse sequence numbers.
    pub fn open(dir: &Path) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("state directory {}: {e}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        bitsgw_io::try_lock_exclusive(&lock).map_err(|e| {
            format!(
                "state directory {} is in use by another bitsgw ({e}); give each appliance a \"state_dir\" of its own",
                dir.display()
            )
        })?;
        let path = dir.join(LEASE_FILE);
        let mut ceilings = BTreeMap::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    if line.starts_with('#') || line.trim().is_empty() {
                        continue;
                    }
                    let (id, ceiling) = parse_line(line).ok_or_else(|| {
                        format!(
                            "{}: line {}: not \"identity ceiling\"; the file is damaged, and starting without it could reuse sequence numbers (nonces)",
                            path.display(),
                            n + 1
                        )
                    })?;
                    ceilings.insert(id, ceiling);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Ok(FileLeases {
            dir: dir.to_path_buf(),
            path,
            ceilings: Mutex::new(ceilings),
            _lock: lock,
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `ceilings` durably: temporary file (0600), sync, rename,
    /// directory sync.
    fn persist(&self, ceilings: &BTreeMap<[u8; 32], u64>) -> std::io::Result<()> {
        let mut text = String::with_capacity(HEADER.len() + 1 + ceilings.len() * 86);
        text.push_str(HEADER);
        text.push('\n');
        for (id, ceiling) in ceilings {
            text.push_str(&hex(id));
            text.push(' ');
            text.push_str(&ceiling.to_string());
            text.push('\n');
        }
        let tmp = self.dir.join(format!("{LEASE_FILE}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }
}

impl LeaseKeeper for FileLeases {
    fn lease(&self, requests: &[LeaseRequest]) -> Result<Vec<Lease>, LeaseError> {
        let mut ceilings = self
            .ceilings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = ceilings.clone();
        let mut leases = Vec::with_capacity(requests.len());
        for request in requests {
            let stored = ceilings.get(&request.identity).copied().unwrap_or(0);
            let lease = Lease::next(stored, request);
            ceilings.insert(request.identity, lease.ceiling);
            leases.push(lease);
        }
        if let Err(e) = self.persist(&ceilings) {
            *ceilings = before;
            tracing::error!(
                sas = requests.len(),
                error = %e,
                file = %self.path.display(),
                "sequence leases not stored: the SAs that asked send nothing until they are"
            );
            return Err(LeaseError::Store {
                sas: requests.len(),
                problem: e.to_string(),
            });
        }
        tracing::info!(
            sas = requests.len(),
            file = %self.path.display(),
            "sequence numbers leased"
        );
        for (request, lease) in requests.iter().zip(&leases) {
            tracing::debug!(
                sa = %request.name,
                spi = format_args!("{:#010x}", request.spi),
                from = lease.floor.max(request.last_sent) + 1,
                to = lease.ceiling,
                "sequence numbers leased"
            );
        }
        Ok(leases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ipsec::{IpsecStage, StageConfig};
    use bitsgw_wire::Timestamp;
    use std::os::unix::fs::PermissionsExt as _;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bitsgw-leases-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn request() -> LeaseRequest {
        let set = bitsgw_ipsec::config::parse_policy(
            r#"{"danger_static_keys_for_counter_mode": true,
                "spd": {"outbound": [{"name": "all", "action": "protect", "sa": "out"}]},
                "sad": [{"name": "out", "direction": "outbound", "spi": 4096,
                         "tunnel": {"local": "192.0.2.1", "remote": "192.0.2.2"},
                         "transform": "aes-gcm-128",
                         "enc_key": "0x000102030405060708090a0b0c0d0e0f10111213"}]}"#,
            "t.json",
        )
        .unwrap();
        let mut stage = IpsecStage::new(StageConfig {
            sequence_leases: true,
            ..StageConfig::default()
        });
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        let mut out = Vec::new();
        stage.take_lease_requests(&mut out);
        out.remove(0)
    }

    /// A lease survives the process: reopened, the directory's keeper
    /// gives a fresh SA with the same key numbers above the old ceiling.
    /// The file is private, names no key, and the directory is locked
    /// while in use.
    #[test]
    fn leases_survive_a_restart_and_stay_private() {
        let dir = temp_dir("restart");
        let first = {
            let keeper = FileLeases::open(&dir).unwrap();
            assert!(FileLeases::open(&dir).unwrap_err().contains("in use"));
            keeper.lease(&[request()]).unwrap().remove(0)
        };
        assert_eq!(first.floor, 0);
        let text = fs::read_to_string(dir.join(LEASE_FILE)).unwrap();
        assert!(text.contains(&format!(" {}", first.ceiling)));
        assert!(!text.contains("000102030405060708090a0b0c0d0e0f"));
        let mode = fs::metadata(dir.join(LEASE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let keeper = FileLeases::open(&dir).unwrap();
        // Two SAs of one key stream in one batch (refused by `check`, but
        // the keeper must not hand them the same numbers either).
        let both = keeper.lease(&[request(), request()]).unwrap();
        assert_eq!(both[0].floor, first.ceiling);
        assert!(both[0].ceiling > first.ceiling);
        assert_eq!(both[1].floor, both[0].ceiling);
        drop(keeper);
        fs::write(dir.join(LEASE_FILE), "zz 12\n").unwrap();
        assert!(FileLeases::open(&dir).unwrap_err().contains("line 1"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
