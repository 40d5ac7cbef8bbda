//! `--trace DIR`: one pcap per stage boundary (host side, after IPsec,
//! wire side) that Wireshark opens, so a packet can be followed through
//! the pipeline.

use bitsgw_io::pcap::PcapWriter;
use bitsgw_pipeline::{LinkType, Tap, TapPoint};
use bitsgw_wire::Timestamp;
use std::path::{Path, PathBuf};

/// Writes each tap point's frames to its own capture.
pub struct PcapTap {
    writers: Vec<(TapPoint, PcapWriter)>,
    paths: Vec<PathBuf>,
    errors: u64,
}

impl std::fmt::Debug for PcapTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapTap")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl PcapTap {
    /// Creates `DIR/host.pcap`, `DIR/after-ipsec.pcap` and `DIR/wire.pcap`;
    /// the host and wire captures have the ports' link type, the one after
    /// IPsec is raw IP.
    pub fn create(dir: &Path, host: LinkType, wire: LinkType) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut writers = Vec::new();
        let mut paths = Vec::new();
        for point in TapPoint::ALL {
            let link = match point {
                TapPoint::Host => host,
                TapPoint::AfterIpsec => LinkType::RawIp,
                TapPoint::Wire => wire,
            };
            let path = dir.join(format!("{}.pcap", point.name()));
            let w = PcapWriter::create(&path, link).map_err(|e| e.to_string())?;
            writers.push((point, w));
            paths.push(path);
        }
        Ok(PcapTap {
            writers,
            paths,
            errors: 0,
        })
    }

    /// The files written.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Flushes every capture; returns how many frames could not be written.
    pub fn finish(&mut self) -> u64 {
        for (_, w) in &mut self.writers {
            if w.flush().is_err() {
                self.errors += 1;
            }
        }
        self.errors
    }
}

impl Tap for PcapTap {
    fn tap(&mut self, point: TapPoint, now: Timestamp, _link: LinkType, frame: &[u8]) {
        if let Some((_, w)) = self.writers.iter_mut().find(|(p, _)| *p == point) {
            if w.write(now, frame).is_err() {
                self.errors += 1;
            }
        }
    }
}
