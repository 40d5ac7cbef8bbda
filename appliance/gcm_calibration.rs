//! The measurement behind the `auto` AES-GCM backend: at start, `run`
//! seals the same ESP packets with every backend and key size and lets
//! SAs configured `auto` use the faster (see `bitsgw_ipsec::gcm_choice`).
//!
//! Which backend wins depends on the CPU (AES-NI, PCLMULQDQ, VAES and
//! VPCLMULQDQ), on the build (RustCrypto's code is only fast when its
//! runtime-detected paths are inlined, which the release profile's fat LTO
//! and single codegen unit allow) and on the packet size, so it is
//! measured rather than guessed from CPU flags. The score is the mean time
//! per packet of the simple IMIX (7 x 64, 4 x 576, 1 x 1400 octets of
//! payload), the best of several rounds with the backends interleaved, so
//! that a moment of load on the other core does not decide it. It takes a
//! few milliseconds.

use bitsgw_ipsec::crypto::{GcmBackend, Transform, TransformId, ESP_HEADER_LEN, ICV_LEN};
use bitsgw_ipsec::gcm_choice::GcmPreference;
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

/// The simple IMIX: (payload octets, packets of every 12).
const IMIX: [(usize, u32); 3] = [(64, 7), (576, 4), (1400, 1)];

/// Rounds per backend and key size; the fastest counts.
const ROUNDS: usize = 5;

/// Seals per packet size in a round.
const SEALS: usize = 200;

/// Within this fraction of each other the two are even, and ring (whose
/// speed depends least on the build) stays.
const EVEN: f64 = 0.03;

/// What was measured and chosen.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The choice for `auto` SAs.
    pub preference: GcmPreference,
    /// Mean ns per IMIX packet: (transform, backend, ns).
    pub measured: Vec<(TransformId, GcmBackend, f64)>,
}

impl Calibration {
    /// One line for the log: each key size's choice and the figures.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for t in [TransformId::AesGcm128, TransformId::AesGcm256] {
            let chosen = self.preference.for_transform(t);
            let _ = write!(out, "{}: {chosen} (", t.name());
            let figures: Vec<String> = self
                .measured
                .iter()
                .filter(|(id, _, _)| *id == t)
                .map(|(_, b, ns)| format!("{b} {ns:.0} ns"))
                .collect();
            let _ = write!(out, "{}); ", figures.join(", "));
        }
        out.trim_end_matches("; ").to_string()
    }
}

/// Measures both backends for both AES key sizes.
pub fn calibrate() -> Calibration {
    let mut measured = Vec::new();
    let mut pick = |t: TransformId| -> GcmBackend {
        let mut best: Vec<(GcmBackend, f64)> = GcmBackend::ALL
            .iter()
            .map(|b| (*b, f64::INFINITY))
            .collect();
        for _ in 0..ROUNDS {
            for (backend, ns) in best.iter_mut() {
                if let Some(m) = imix_ns(t, *backend) {
                    *ns = ns.min(m);
                }
            }
        }
        for (b, ns) in &best {
            if ns.is_finite() {
                measured.push((t, *b, *ns));
            }
        }
        choose(&best)
    };
    let aes128 = pick(TransformId::AesGcm128);
    let aes256 = pick(TransformId::AesGcm256);
    Calibration {
        preference: GcmPreference { aes128, aes256 },
        measured,
    }
}

/// The faster backend, ring when they are even or nothing was measured.
fn choose(scores: &[(GcmBackend, f64)]) -> GcmBackend {
    let ring = scores
        .iter()
        .find(|(b, _)| *b == GcmBackend::Ring)
        .map_or(f64::INFINITY, |s| s.1);
    let fastest = scores
        .iter()
        .filter(|(_, ns)| ns.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match fastest {
        Some((b, ns)) if *ns < ring * (1.0 - EVEN) => *b,
        _ => GcmBackend::Ring,
    }
}

/// Mean ns per IMIX packet sealed by `backend`, or None if it can not key
/// the transform.
fn imix_ns(t: TransformId, backend: GcmBackend) -> Option<f64> {
    let key = vec![0x42u8; t.enc_key_len()];
    let transform = Transform::new(t, backend, &key, &[]).ok()?;
    let mut total_ns = 0.0;
    let mut weight = 0u32;
    for (payload, share) in IMIX {
        let len = ESP_HEADER_LEN + t.iv_len() + payload + t.pad_len(payload) + 2 + ICV_LEN;
        let mut esp = vec![0u8; len];
        let start = Instant::now();
        for seq in 1..=SEALS as u64 {
            esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            transform.seal(black_box(&mut esp), seq, false).ok()?;
        }
        let per = start.elapsed().as_nanos() as f64 / SEALS as f64;
        total_ns += per * f64::from(share);
        weight += share;
    }
    Some(total_ns / f64::from(weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_wins_and_ring_stays_when_even_or_unmeasured() {
        use GcmBackend::{Ring, RustCrypto};
        assert_eq!(choose(&[(Ring, 100.0), (RustCrypto, 50.0)]), RustCrypto);
        assert_eq!(choose(&[(Ring, 50.0), (RustCrypto, 100.0)]), Ring);
        assert_eq!(choose(&[(Ring, 100.0), (RustCrypto, 98.0)]), Ring);
        assert_eq!(
            choose(&[(Ring, f64::INFINITY), (RustCrypto, f64::INFINITY)]),
            Ring
        );
        assert_eq!(
            choose(&[(Ring, f64::INFINITY), (RustCrypto, 10.0)]),
            RustCrypto
        );
    }

    #[test]
    fn calibration_measures_every_backend_and_key_size() {
        let c = calibrate();
        assert_eq!(c.measured.len(), 4, "{:?}", c.measured);
        for (_, _, ns) in &c.measured {
            assert!(ns.is_finite() && *ns > 0.0);
        }
        let line = c.summary();
        assert!(
            line.contains("aes-gcm-128") && line.contains("aes-gcm-256"),
            "{line}"
        );
        for b in GcmBackend::ALL {
            assert!(line.contains(b.name()), "{line}");
        }
    }
}
