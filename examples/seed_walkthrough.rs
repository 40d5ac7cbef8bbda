//! The seeds' IPsec configurations at work: a mobile node's and a home
//! agent's IPsec stages, loaded from policies/, carry each class of traffic
//! of RFC 3776 section 5.2 and of the seed draft's host-wide variant, and
//! the query API answers what the seed draft's tunnel stage asks.
//!
//! `make demo` runs it; `--pcap FILE` also writes the wire packets, which
//! `tshark` decrypts with the keys in policies/.

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::query::Query;
use bitsgw_ipsec::sa::{Direction, Mode};
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_wire::craft::{ip_packet, mh_packet, udp_packet};
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";
const CN: &str = "2001:db8:77::5";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0u8; 16]))
}

fn load(dir: &Path, name: &str) -> Result<IpsecStage, String> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set = parse_policy(&text, name).map_err(|e| e.to_string())?;
    let mut stage = IpsecStage::new(StageConfig::default());
    set.apply(&mut stage, Timestamp::ZERO)
        .map_err(|e| e.to_string())?;
    Ok(stage)
}

/// A one-line description of an ESP packet's header stack.
fn stack(pkt: &[u8]) -> String {
    let Ok(meta) = bitsgw_wire::ip::parse(pkt) else {
        return "?".into();
    };
    let (s, d) = match meta.version {
        bitsgw_wire::ip::IpVersion::V6 => (
            IpAddr::from(<[u8; 16]>::try_from(&pkt[8..24]).unwrap_or([0; 16])),
            IpAddr::from(<[u8; 16]>::try_from(&pkt[24..40]).unwrap_or([0; 16])),
        ),
        bitsgw_wire::ip::IpVersion::V4 => (
            IpAddr::from(<[u8; 4]>::try_from(&pkt[12..16]).unwrap_or([0; 4])),
            IpAddr::from(<[u8; 4]>::try_from(&pkt[16..20]).unwrap_or([0; 4])),
        ),
    };
    format!(
        "IP {s} > {d} | ESP spi {:#010x} | {} bytes",
        esp_spi(pkt),
        pkt.len()
    )
}

/// The SPI of an ESP packet (0 if it is none).
fn esp_spi(pkt: &[u8]) -> u32 {
    bitsgw_wire::ip::parse(pkt)
        .ok()
        .and_then(|m| pkt.get(m.header_len..m.header_len + 4))
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn mode_name(q: &Query<'_>, spi: u32) -> &'static str {
    match q.inbound_sa(spi).map(|i| i.mode) {
        Some(Mode::Tunnel { .. }) => "tunnel",
        Some(Mode::Transport) => "transport",
        None => "?",
    }
}

struct Pcap(Vec<u8>);

impl Pcap {
    fn new() -> Self {
        // Classic pcap header, link type 101 (raw IP).
        let mut h = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&101u32.to_le_bytes());
        Pcap(h)
    }

    fn add(&mut self, n: u32, pkt: &[u8]) {
        let len = u32::try_from(pkt.len()).unwrap_or(u32::MAX);
        for v in [n, 0, len, len] {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self.0.extend_from_slice(pkt);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut pcap_path: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pcap" => pcap_path = args.next().map(PathBuf::from),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut pcap = Pcap::new();
    let mut n = 0;
    for (title, mn_file, ha_file) in [
        (
            "RFC 3776 section 5.2 manual keying",
            "rfc3776-mn.json",
            "rfc3776-ha.json",
        ),
        (
            "seed draft, host-wide SPD (Req #2)",
            "dsmip-hostwide-mn.json",
            "dsmip-hostwide-ha.json",
        ),
    ] {
        let mut mn = load(&dir, mn_file)?;
        let mut ha = load(&dir, ha_file)?;
        println!("== {title}: {mn_file} <-> {ha_file}");
        let flows: [(&str, bool, Vec<u8>); 8] = [
            (
                "Binding Update        MN -> HA",
                true,
                mh_packet(ip(HOA), ip(HA), 5),
            ),
            (
                "Binding Ack           HA -> MN",
                false,
                mh_packet(ip(HA), ip(HOA), 6),
            ),
            (
                "Home Test Init        MN -> CN",
                true,
                mh_packet(ip(HOA), ip(CN), 1),
            ),
            (
                "Home Test             CN -> MN",
                false,
                mh_packet(ip(CN), ip(HOA), 3),
            ),
            (
                "Prefix Solicitation   MN -> HA",
                true,
                ip_packet(ip(HOA), ip(HA), 58, &[146, 0, 0, 0, 0, 1, 0, 0], false),
            ),
            (
                "Prefix Advertisement  HA -> MN",
                false,
                ip_packet(ip(HA), ip(HOA), 58, &[147, 0, 0, 0, 0, 1, 0, 0], false),
            ),
            (
                "payload (UDP)         MN -> CN",
                true,
                udp_packet(ip(HOA), ip(CN), 40000, 5001, 200),
            ),
            (
                "payload (UDP)         CN -> MN",
                false,
                udp_packet(ip(CN), ip(HOA), 5001, 40000, 200),
            ),
        ];
        for (what, from_mn, pkt) in flows {
            let (tx, rx) = if from_mn {
                (&mut mn, &mut ha)
            } else {
                (&mut ha, &mut mn)
            };
            let mut buf = PacketBuf::from_slice(&pkt);
            let out = tx.handle_outbound(&mut buf, Timestamp::ZERO);
            if out != Disposition::Forward {
                println!("  {what}: {out:?} (this SPD does not protect it)");
                continue;
            }
            let wire = buf.data().to_vec();
            n += 1;
            pcap.add(n, &wire);
            let mode = mode_name(&rx.query(), esp_spi(&wire));
            let got = rx.handle_inbound(&mut buf, Timestamp::ZERO);
            let ok = got == Disposition::Deliver && buf.data() == &pkt[..];
            println!(
                "  {what}: {} ({mode}) -> {}",
                stack(&wire),
                if ok {
                    "decrypted, selectors checked".to_string()
                } else {
                    format!("{got:?}")
                }
            );
        }
        // What the seed's tunnel stage asks (Req #3 and Req #4).
        let q = mn.query();
        if let Some(bu) = q
            .spd_entry(Direction::Outbound, "bu-out")
            .and_then(|e| q.outbound_sa(e))
        {
            println!(
                "  query (MN): SPD entry bu-out is protected by {} spi {:#010x} now",
                bu.name, bu.spi
            );
            let hq = ha.query();
            if let Some(info) = hq.inbound_sa(bu.spi) {
                let sel: Vec<String> = info.selectors.iter().map(|s| s.to_string()).collect();
                println!(
                    "  query (HA): spi {:#010x} stands for {}",
                    bu.spi,
                    sel.join("; ")
                );
            }
        }
        let c = ha.counters();
        println!(
            "  HA counters: {} decrypted, {} protected, {} dropped\n",
            c.inbound_decrypted,
            c.outbound_protected,
            c.total_drops()
        );
    }
    if let Some(path) = pcap_path {
        std::fs::write(&path, &pcap.0).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wire packets written to {} (raw IP pcap)", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed_walkthrough: {e}");
            ExitCode::FAILURE
        }
    }
}
