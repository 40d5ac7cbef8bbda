//! `--trace DIR`: one pcap per stage boundary (host side, after IPsec,
//! wire side) that Wireshark opens, so a packet can be followed through
//! the pipeline.
//!
//! The host capture holds cleartext, so the captures are private: the
//! directory must be this user's and writable by nobody else (it is made
//! 0700 if missing), and each capture is a fresh file of mode 0600; a file
//! or symbolic link already at its name is replaced, never written
//! through. `bitsgw run` flushes the captures every second
//! ([`PcapTap::flush`]), so a killed appliance leaves readable captures;
//! frames that can not be written are counted and warned about at once.

use crate::log_limit::LogLimit;
use bitsgw_io::pcap::PcapWriter;
use bitsgw_pipeline::{LinkType, Tap, TapPoint};
use bitsgw_wire::Timestamp;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::warn;

/// How often a run of write failures is warned about.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Writes each tap point's frames to its own capture.
pub struct PcapTap {
    writers: Vec<(TapPoint, PcapWriter)>,
    paths: Vec<PathBuf>,
    failures: u64,
    /// Failures are warned about at most once per [`WARN_INTERVAL`].
    warned: LogLimit,
}

impl std::fmt::Debug for PcapTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapTap")
            .field("paths", &self.paths)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl PcapTap {
    /// Creates `DIR/host.pcap`, `DIR/after-ipsec.pcap` and `DIR/wire.pcap`;
    /// the host and wire captures have the ports' link type, the one after
    /// IPsec is raw IP.
    pub fn create(dir: &Path, host: LinkType, wire: LinkType) -> Result<Self, String> {
        bitsgw_io::process::private_dir(dir)
            .map_err(|e| format!("trace directory {}: {e}", dir.display()))?;
        let mut writers = Vec::new();
        let mut paths = Vec::new();
        for point in TapPoint::ALL {
            let link = match point {
                TapPoint::Host => host,
                TapPoint::AfterIpsec => LinkType::RawIp,
                TapPoint::Wire => wire,
            };
            let path = dir.join(format!("{}.pcap", point.name()));
            let w = PcapWriter::create_private(&path, link).map_err(|e| e.to_string())?;
            writers.push((point, w));
            paths.push(path);
        }
        Ok(PcapTap {
            writers,
            paths,
            failures: 0,
            warned: LogLimit::new(WARN_INTERVAL),
        })
    }

    /// The files written.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Frames and flushes that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Writes what is buffered to the files, so they hold every frame
    /// taken so far even if the process is killed.
    pub fn flush(&mut self) {
        for i in 0..self.writers.len() {
            if let Err(e) = self.writers[i].1.flush() {
                self.failed(&e);
            }
        }
    }

    /// Flushes every capture; returns how many frames and flushes failed.
    pub fn finish(&mut self) -> u64 {
        self.flush();
        self.failures
    }

    /// Counts a failure; warns at once, then at most every
    /// [`WARN_INTERVAL`] (a full disk fails every frame).
    fn failed(&mut self, e: &bitsgw_io::PortError) {
        self.failures += 1;
        if let Some(suppressed) = self.warned.allow(Instant::now()) {
            warn!(failures = self.failures, suppressed, "trace: {e}");
        }
    }
}

impl Tap for PcapTap {
    fn tap(&mut self, point: TapPoint, now: Timestamp, _link: LinkType, frame: &[u8]) {
        if let Some(i) = self.writers.iter().position(|(p, _)| *p == point) {
            if let Err(e) = self.writers[i].1.write(now, frame) {
                self.failed(&e);
            }
        }
    }
}
