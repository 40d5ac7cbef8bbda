//! The DPDK row of `make bench-e2e`: two DPDK `ipsec-secgw` gateways, DPDK's
//! reference userspace IPsec gateway, in the same bump-in-the-wire places
//! and with the same ESP (AES-GCM-128 tunnel mode between 203.0.113.1 and
//! 203.0.113.2) as bitsgw's rows, so that one run compares the two.
//!
//! The gateway is built at benchmark time from the example source Debian
//! ships (`dpdk-doc`, against `libdpdk-dev`), in a copy under the target
//! directory; nothing of it is kept in this repository. As run here:
//! - `--no-huge --no-pci`, one `net_af_packet` vdev per veth end with a
//!   ring of 8192 frames (the default 512 overflows whenever the poll loop
//!   is descheduled), the `crypto_aesni_gcm` crypto PMD;
//! - the example asks its ports for the RX checksum offload, which
//!   `net_af_packet` does not offer, and then refuses to start: the copy's
//!   port configuration asks for none;
//! - one lcore per gateway, busy-polling (gateway A on CPU 0, B on CPU 1);
//! - its ports take only IP, so the hosts' neighbour entries for their
//!   router are static (bitsgw's bumps pass ARP; the frames measured are
//!   the same).

use super::common::Lab;
use super::{build, iperf, Measured};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Debian's `dpdk-doc` puts the example's source.
const SOURCE: &str = "/usr/share/dpdk/examples/ipsec-secgw";

/// The one line of the example's port configuration that asks for the RX
/// checksum offload, and what the copy asks for instead.
const RX_OFFLOAD: (&str, &str) = (".offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,", ".offloads = 0,");

/// Builds the gateway (once per target directory) and returns its path,
/// or why it can not be had.
pub fn build_secgw() -> Result<PathBuf, String> {
    if !Path::new(SOURCE).join("ipsec-secgw.c").exists() {
        return Err(format!(
            "{SOURCE} is missing: install Debian's dpdk-doc and libdpdk-dev \
             (scripts/setup-test-deps.sh --bench does)"
        ));
    }
    let libdpdk = Command::new("pkg-config")
        .args(["--exists", "libdpdk"])
        .status()
        .map_err(|e| format!("pkg-config: {e} (install pkg-config)"))?;
    if !libdpdk.success() {
        return Err("pkg-config knows no libdpdk: install Debian's libdpdk-dev".into());
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipsec-secgw");
    let binary = dir.join("build/ipsec-secgw");
    if binary.exists() {
        return Ok(binary);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let copied = Command::new("cp")
        .args(["-r", SOURCE])
        .arg(&dir)
        .status()
        .map_err(|e| format!("cp: {e}"))?;
    if !copied.success() {
        return Err(format!("copying {SOURCE} to {} failed", dir.display()));
    }
    let main = dir.join("ipsec-secgw.c");
    let text = std::fs::read_to_string(&main).map_err(|e| format!("{}: {e}", main.display()))?;
    if text.matches(RX_OFFLOAD.0).count() != 1 {
        return Err(format!(
            "{}: expected one `{}` to remove; this DPDK version differs from 22.11",
            main.display(),
            RX_OFFLOAD.0
        ));
    }
    std::fs::write(&main, text.replace(RX_OFFLOAD.0, RX_OFFLOAD.1))
        .map_err(|e| format!("{}: {e}", main.display()))?;
    let out = Command::new("make")
        .args(["-C"])
        .arg(&dir)
        .args(["-j2", "shared"])
        .output()
        .map_err(|e| format!("make: {e}"))?;
    if !out.status.success() || !binary.exists() {
        return Err(format!(
            "building ipsec-secgw failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(binary)
}

/// One gateway's rules in the example's configuration language: the SPD
/// (out: protect what goes to the far site; in: what comes from it), the
/// two AES-GCM-128 tunnel-mode SAs, the routes and the next hops' MAC
/// addresses.
struct Side<'a> {
    ns: &'a str,
    cpu: u32,
    local_tunnel: &'a str,
    remote_tunnel: &'a str,
    local_site: &'a str,
    remote_site: &'a str,
    spi_out: u32,
    spi_in: u32,
    key_out: &'a str,
    key_in: &'a str,
    host_mac: String,
    router_mac: String,
}

impl Side<'_> {
    fn config(&self) -> String {
        let key = |hex: &str| {
            hex.as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap_or("00"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let any = "sport 0:65535 dport 0:65535";
        format!(
            "sp ipv4 out esp protect {out} pri 1 dst {remote_site} {any}\n\
             sp ipv4 in esp protect {inb} pri 1 dst {local_site} {any}\n\
             sa out {out} aead_algo aes-128-gcm aead_key {kout} mode ipv4-tunnel src {lt} dst {rt}\n\
             sa in {inb} aead_algo aes-128-gcm aead_key {kin} mode ipv4-tunnel src {rt} dst {lt}\n\
             rt ipv4 dst {rt}/32 port 1\n\
             rt ipv4 dst {local_site} port 0\n\
             neigh port 0 {host}\n\
             neigh port 1 {router}\n",
            out = self.spi_out,
            inb = self.spi_in,
            remote_site = self.remote_site,
            local_site = self.local_site,
            kout = key(self.key_out),
            kin = key(self.key_in),
            lt = self.local_tunnel,
            rt = self.remote_tunnel,
            host = self.host_mac,
            router = self.router_mac,
        )
    }
}

/// The AES-GCM-128 keys with their 4-octet salts (RFC 4106 8.1), 20
/// octets in hex, one per direction.
const KEY_A_TO_B: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01020304";
const KEY_B_TO_A: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a505060708";

/// iperf3 through two ipsec-secgw gateways in bitsgw's places.
pub fn secgw_row(lab: &mut Lab, binary: &Path) -> Measured {
    build(lab, true);
    let (ra, rb) = (lab.mac("r", "ra"), lab.mac("r", "rb"));
    // The gateways pass no ARP: the hosts know their router.
    lab.exec(
        "hA",
        &[
            "ip",
            "neigh",
            "replace",
            "192.0.2.1",
            "lladdr",
            &ra,
            "dev",
            "eth0",
        ],
    );
    lab.exec(
        "hB",
        &[
            "ip",
            "neigh",
            "replace",
            "198.51.100.1",
            "lladdr",
            &rb,
            "dev",
            "eth0",
        ],
    );
    let sides = [
        Side {
            ns: "gA",
            cpu: 0,
            local_tunnel: "203.0.113.1",
            remote_tunnel: "203.0.113.2",
            local_site: "192.0.2.0/24",
            remote_site: "198.51.100.0/24",
            spi_out: 0x1001,
            spi_in: 0x2001,
            key_out: KEY_A_TO_B,
            key_in: KEY_B_TO_A,
            host_mac: lab.mac("hA", "eth0"),
            router_mac: ra,
        },
        Side {
            ns: "gB",
            cpu: 1,
            local_tunnel: "203.0.113.2",
            remote_tunnel: "203.0.113.1",
            local_site: "198.51.100.0/24",
            remote_site: "192.0.2.0/24",
            spi_out: 0x2001,
            spi_in: 0x1001,
            key_out: KEY_B_TO_A,
            key_in: KEY_A_TO_B,
            host_mac: lab.mac("hB", "eth0"),
            router_mac: rb,
        },
    ];
    let mut pids = Vec::new();
    for side in &sides {
        let cfg = lab.dir.join(format!("secgw-{}.cfg", side.ns));
        std::fs::write(&cfg, side.config()).unwrap();
        let log = lab.dir.join(format!("secgw-{}.log", side.ns));
        let cpu = side.cpu;
        let prefix = format!("bitsgw-bench-{}-{}", std::process::id(), side.ns);
        // Port 0 faces the host (protected), port 1 the router
        // (unprotected: ESP comes in there).
        let command = format!(
            "exec {bin} --no-huge --no-pci -m 512 -l {cpu} --file-prefix {prefix} \
             --vdev net_af_packet0,iface=host,framecnt=8192 \
             --vdev net_af_packet1,iface=wan,framecnt=8192 \
             --vdev crypto_aesni_gcm_{ns} \
             -- -p 0x3 -u 0x2 -P --config '(0,0,{cpu}),(1,0,{cpu})' -f {cfg} >{log} 2>&1",
            bin = binary.display(),
            ns = side.ns,
            cfg = cfg.display(),
            log = log.display(),
        );
        pids.push(lab.spawn(side.ns, &["sh", "-c", &command]));
    }
    // Up when a ping crosses both gateways (the hosts' first packets wait
    // for the poll loops to start).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ping = lab.try_exec("hA", &["ping", "-c", "1", "-W", "1", "198.51.100.20"]);
        if ping.status.success() {
            break;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = sides
                .iter()
                .map(|s| {
                    std::fs::read_to_string(lab.dir.join(format!("secgw-{}.log", s.ns)))
                        .unwrap_or_default()
                })
                .collect();
            panic!("no ping through the ipsec-secgw gateways in 30 s; their logs:\n{logs:#?}");
        }
    }
    let row = iperf(lab);
    for pid in pids {
        lab.terminate(pid);
    }
    row
}
