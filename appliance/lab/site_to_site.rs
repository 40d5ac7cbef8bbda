//! `bitsgw lab site-to-site`: two unmodified hosts behind two `gateway`
//! appliances inline, ESP tunnel mode, iperf3 throughput.

use std::time::Duration;

use super::*;

pub(super) fn run_site_to_site(
    n: &mut Netns,
    opts: &LabOptions,
    out: &mut dyn FnMut(&str),
) -> Result<LabReport> {
    n.link("hA", "eth0", "gA", "host")?;
    n.link("gA", "wan", "r", "ra")?;
    n.link("r", "rb", "gB", "wan")?;
    n.link("gB", "host", "hB", "eth0")?;
    n.script(
        "hA",
        &[
            "ip addr add 192.0.2.10/24 dev eth0",
            "ip link set eth0 mtu 1400",
            "ip route add default via 192.0.2.1",
        ],
    )?;
    n.script(
        "hB",
        &[
            "ip addr add 198.51.100.20/24 dev eth0",
            "ip link set eth0 mtu 1400",
            "ip route add default via 198.51.100.1",
        ],
    )?;
    n.sysctl_router("r")?;
    n.script(
        "r",
        &[
            "ip addr add 192.0.2.1/24 dev ra",
            "ip addr add 198.51.100.1/24 dev rb",
        ],
    )?;
    // The tunnel endpoints live in the bumps, which have no IP stack: the
    // router reaches them at the hosts' MAC addresses, through the bump.
    for (host, dev, endpoint) in [("hA", "ra", "203.0.113.1"), ("hB", "rb", "203.0.113.2")] {
        let mac = n.exec(host, &["cat", "/sys/class/net/eth0/address"])?;
        let mac = mac.trim();
        n.exec(
            "r",
            &["ip", "route", "add", &format!("{endpoint}/32"), "dev", dev],
        )?;
        n.exec(
            "r",
            &["ip", "neigh", "add", endpoint, "lladdr", mac, "dev", dev],
        )?;
    }
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let exe = exe.to_string_lossy().into_owned();
    for side in ["a", "b"] {
        let _ = std::fs::remove_file(n.dir.join(format!("gw-{side}.sock")));
    }
    for (g, side) in [("gA", "a"), ("gB", "b")] {
        let cfg = n.dir.join(format!("gw-{side}.json"));
        write(
            &cfg,
            &format!(
                r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "workers": 1, "pipeline": "run-to-completion", "control_socket": "{}", "state_dir": "gw-{side}-state"}}"#,
                policy(&n.dir, &format!("site-to-site-{side}.json"))?.display(),
                n.dir.join(format!("gw-{side}.sock")).display()
            ),
        )?;
        n.spawn(
            g,
            &format!("bitsgw-{side}"),
            &[&exe, "run", &cfg.to_string_lossy()],
        )?;
    }
    for side in ["a", "b"] {
        let sock = n.dir.join(format!("gw-{side}.sock"));
        wait_for_socket(n, &sock)?;
    }
    out(
        "topology: hA - gA (bitsgw) - r - gB (bitsgw) - hB, ESP tunnel mode between the gateways\n",
    );
    let ping = n.exec(
        "hA",
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "2",
            "198.51.100.20",
        ],
    )?;
    out(&format!(
        "ping hA -> hB: {}\n",
        ping.lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or("")
    ));
    n.spawn(
        "hB",
        "iperf-server",
        &["iperf3", "-s", "-1", "-B", "198.51.100.20"],
    )?;
    let secs = if opts.short { "2" } else { "5" };
    let mut bps = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        n.interrupted()?;
        if let Ok(o) = n.exec("hA", &["iperf3", "-c", "198.51.100.20", "-t", secs, "-J"]) {
            bps = json(&o)?["end"]["sum_received"]["bits_per_second"].as_f64();
            break;
        }
    }
    n.end("iperf-server");
    let bps = bps.ok_or_else(|| err("iperf3 never connected"))?;
    out(&format!(
        "iperf3 TCP hA -> hB through ESP: {:.1} Mbit/s\n",
        bps / 1e6
    ));
    out("\ngateway A: security associations\n");
    out(&bitsgw(&[
        "show",
        "sa",
        "--socket",
        &n.dir.join("gw-a.sock").to_string_lossy(),
    ])?);
    Ok(LabReport {
        tcp: vec![("site-to-site".into(), bps)],
        ..Default::default()
    })
}
