//! `bitsgw lab`: the whole story in network namespaces, on real
//! interfaces, with unmodified hosts.
//!
//! `bitsgw lab mobility` builds, with network namespaces, veth pairs, TUN
//! devices and nftables:
//!
//! ```text
//!  host ── mn ══╤═ visited IPv6 A (2001:db8:2::/64) ══╗
//!  (unmodified) │═ visited IPv6 B (2001:db8:3::/64) ══╣
//!               │═ public IPv4 (203.0.113.64/26) ═════╣ inet ══ ha ── home ── cn
//!               │═ behind a NAT (198.51.100.0/24) ═ nat (masquerade) ═╝      (unmodified)
//!               └─ home access (2001:db8:1::2:0/112) ───────────────── ha
//! ```
//!
//! `mn` runs a bitsgw `mn` appliance for the host, `ha` a bitsgw `ha`
//! appliance in front of the home network, both with TUN ports: the
//! namespace's own routing takes packets of the host (and of the home
//! network for the home address) into the appliance's host port, and the
//! packets the appliance sends on its network port to the network the
//! care-of address belongs to. The scenario registers over IPv6, moves to
//! public IPv4, behind the NAT (NAT detected, UDP from then on), lives
//! through a NAT rebinding, goes back to IPv6 (make-before-break: zero
//! packets lost is the goal), makes one break-before-make handover (its
//! interruption measured) and returns home; ping and a TCP stream run
//! between the correspondent and the host. The link between the Internet
//! and the home agent is captured and must carry only ESP.
//!
//! `bitsgw lab site-to-site`: two unmodified hosts behind two `gateway`
//! appliances inline (AF_PACKET ports), ESP tunnel mode, iperf3 throughput.
//!
//! Everything the lab makes (namespaces, processes it started, its scratch
//! folder) is removed when it ends, also on Ctrl-C or failure; it can be
//! run again right away.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod mobility;
mod netns;
mod site_to_site;

use mobility::run_mobility;
use netns::{prefix, run_cmd, Netns};
use site_to_site::run_site_to_site;

/// Which lab to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The mobile node's journey.
    Mobility,
    /// Two sites, two gateways.
    SiteToSite,
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Which lab.
    pub scenario: Scenario,
    /// Shorter traffic phases (for tests).
    pub short: bool,
    /// Where the traces and logs go (kept after the lab); a temporary
    /// folder when unset, removed at the end.
    pub keep: Option<PathBuf>,
    /// Mobility: the SAs keyed by hand, not by IKEv2.
    pub manual_keys: bool,
}

/// The lab failed: what, and the output that says why.
#[derive(Debug)]
pub struct LabError(pub String);

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, LabError>;

fn err(msg: impl Into<String>) -> LabError {
    LabError(msg.into())
}

/// What one phase of the mobility scenario saw.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// The phase.
    pub name: String,
    /// The care-of address registered after it ("home" at home).
    pub care_of: String,
    /// The encapsulation data used.
    pub encapsulation: String,
    /// Whether the home agent saw a NAT.
    pub nat: bool,
    /// BUs the mobile node sent and BAs it took during the phase.
    pub bu_sent: u64,
    /// BAs taken.
    pub ba_taken: u64,
    /// Pings sent and received across the handover.
    pub pings_sent: u64,
    /// Pings answered.
    pub pings_received: u64,
    /// Interruption seen by the pings (lost pings times the interval).
    pub interruption_ms: u64,
    /// From the move (or the start) to the registration (BU to BA).
    pub registration_ms: u64,
    /// The mobile node's IKE SA after the phase (its SPIs and addresses)
    /// and its CHILD_SAs; empty when keyed by hand.
    pub ike: String,
}

/// The lab's result.
#[derive(Debug, Clone, Default)]
pub struct LabReport {
    /// Bindings at the home agent after each phase (home addresses).
    pub bindings: Vec<u64>,
    /// Phases in order.
    pub phases: Vec<PhaseReport>,
    /// TCP throughput measured (bits per second), per phase name.
    pub tcp: Vec<(String, f64)>,
    /// Frames captured between the Internet and the home agent, and how
    /// many of them were not ESP (nor ARP / neighbor discovery).
    pub wire_frames: u64,
    /// Frames in clear on that link (must be 0).
    pub wire_cleartext: u64,
    /// IKE's frames on that link (UDP 500 and 4500).
    pub wire_ike: u64,
    /// The IKE exchanges tshark decoded there, by name, in order of
    /// first appearance, with their number of messages.
    pub ike_exchanges: Vec<(String, u64)>,
    /// ESP frames there on the SPIs of the Binding Update and the Binding
    /// Acknowledgement CHILD_SA (both directions' SAs of each phase).
    pub bu_frames: u64,
    /// ESP frames on the Binding Acknowledgement's SPIs.
    pub ba_frames: u64,
    /// Binding Updates tshark decrypted with the keys the appliances
    /// wrote (`"danger_wireshark_keys_file"`), in an IKE-keyed run.
    pub bu_decoded: u64,
    /// Binding Acknowledgements tshark decrypted so.
    pub ba_decoded: u64,
    /// The SAs of both appliances at the end not keyed by IKE.
    pub static_sas: u64,
    /// Where traces and logs are.
    pub traces: Option<PathBuf>,
}

// ---------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// Root, the tools, and /dev/net/tun: everything missing, by name and
/// Debian package.
pub fn check_prerequisites(scenario: Scenario) -> Result<()> {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root (network namespaces need it: run with sudo)".to_string());
    }
    let mut tools = vec![
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("iperf3", "iperf3"),
        ("ethtool", "ethtool"),
    ];
    if scenario == Scenario::Mobility {
        tools.extend([
            ("nft", "nftables"),
            ("conntrack", "conntrack"),
            ("tshark", "tshark"),
        ]);
    }
    for (cmd, pkg) in tools {
        if !have(cmd) {
            missing.push(format!("{cmd} (Debian package {pkg})"));
        }
    }
    if scenario == Scenario::Mobility && !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun (the tun kernel module)".to_string());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(err(format!("bitsgw lab needs: {}", missing.join("; "))))
    }
}

/// The policy files the labs use, built into the binary (so the lab needs
/// nothing but the binary), written into the lab's folder.
fn policy(dir: &Path, name: &str) -> Result<PathBuf> {
    let text = match name {
        "dsmip-hostwide-ha.json" => include_str!("../policies/dsmip-hostwide-ha.json"),
        "dsmip-hostwide-mn.json" => include_str!("../policies/dsmip-hostwide-mn.json"),
        "dsmip-hostwide-ha-ike.json" => include_str!("../policies/dsmip-hostwide-ha-ike.json"),
        "dsmip-hostwide-mn-ike.json" => include_str!("../policies/dsmip-hostwide-mn-ike.json"),
        "site-to-site-a.json" => include_str!("../policies/site-to-site-a.json"),
        "site-to-site-b.json" => include_str!("../policies/site-to-site-b.json"),
        _ => return Err(err(format!("no built-in policy {name}"))),
    };
    let path = dir.join(name);
    write(&path, text)?;
    Ok(path)
}

/// A pre-shared key for one run, from the operating system's random
/// source, in hex.
fn random_psk() -> Result<String> {
    let mut psk = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut psk)
        .map_err(|_| err("no random source for the pre-shared key"))?;
    Ok(psk.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `secret` (and a newline) to `path`, readable by its owner alone.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write(path, &format!("{secret}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("{}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// `bitsgw <args>` (this very binary) and its stdout.
fn bitsgw(args: &[&str]) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "bitsgw {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| err(format!("not JSON ({e}): {text}")))
}

fn wait_for_socket(n: &mut Netns, path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        n.check_alive()?;
        n.interrupted()?;
        if Instant::now() > deadline {
            return Err(err(format!("{} never appeared", path.display())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl LabReport {
    /// The report for scripts and tests.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "phases": self.phases.iter().map(|p| serde_json::json!({
                "name": p.name,
                "care_of": p.care_of,
                "encapsulation": p.encapsulation,
                "nat": p.nat,
                "bu_sent": p.bu_sent,
                "ba_taken": p.ba_taken,
                "pings_sent": p.pings_sent,
                "pings_received": p.pings_received,
                "interruption_ms": p.interruption_ms,
                "registration_ms": p.registration_ms,
                "ike": p.ike,
            })).collect::<Vec<_>>(),
            "bindings": self.bindings,
            "tcp_bits_per_second": self.tcp.iter().map(|(k, v)| serde_json::json!({"phase": k, "bps": v})).collect::<Vec<_>>(),
            "wire_frames": self.wire_frames,
            "wire_cleartext": self.wire_cleartext,
            "wire_ike": self.wire_ike,
            "ike_exchanges": self.ike_exchanges.iter().map(|(k, v)| serde_json::json!({"exchange": k, "messages": v})).collect::<Vec<_>>(),
            "bu_frames": self.bu_frames,
            "ba_frames": self.ba_frames,
            "bu_decoded": self.bu_decoded,
            "ba_decoded": self.ba_decoded,
            "static_sas": self.static_sas,
            "traces": self.traces.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// Runs a lab to its end; what it prints goes to `out`. The namespaces and
/// processes it made are gone when it returns, whatever happened.
pub fn run(opts: &LabOptions, out: &mut dyn FnMut(&str)) -> Result<LabReport> {
    check_prerequisites(opts.scenario)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| err(e.to_string()))?;
    }
    let (dir, keep) = match &opts.keep {
        // Absolute, since the configurations written there name files
        // relative to themselves.
        Some(d) if d.is_absolute() => (d.clone(), true),
        Some(d) => (
            std::env::current_dir()
                .map_err(|e| err(format!("the current folder: {e}")))?
                .join(d),
            true,
        ),
        None => (
            std::env::temp_dir().join(format!("bitsgw-lab-{}", std::process::id())),
            false,
        ),
    };
    let names: &[&str] = match opts.scenario {
        Scenario::Mobility => &["host", "mn", "inet", "nat", "ha", "home"],
        Scenario::SiteToSite => &["hA", "gA", "r", "gB", "hB"],
    };
    let mut n = Netns::new(prefix(opts.scenario), names, dir.clone(), keep, stop)?;
    let result = match opts.scenario {
        Scenario::Mobility => run_mobility(&mut n, opts, out),
        Scenario::SiteToSite => run_site_to_site(&mut n, opts, out),
    };
    let mut result = result.map_err(|e| {
        let mut msg = e.0;
        for (label, _) in &n.children {
            if label.starts_with("bitsgw") {
                let log =
                    std::fs::read_to_string(n.dir.join(format!("{label}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let _ = write!(
                    msg,
                    "\n--- {label} (last lines) ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        LabError(msg)
    })?;
    drop(n);
    if keep {
        result.traces = Some(dir.clone());
        out(&format!("traces, captures and logs: {}\n", dir.display()));
    }
    Ok(result)
}
