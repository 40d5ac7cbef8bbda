//! `bitsgw lab site-to-site`: two unmodified hosts behind two `gateway`
//! appliances inline, ESP tunnel mode keyed by IKEv2 with a pre-shared
//! key, CHILD_SAs rekeyed every few seconds, iperf3 throughput.

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
    // The gateways' own host stacks (IKE on 203.0.113.1 and .2) reach each
    // other through the router, which answers ARP for the far one.
    for k in [
        "net.ipv4.conf.ra.proxy_arp=1",
        "net.ipv4.conf.rb.proxy_arp=1",
    ] {
        n.exec("r", &["sysctl", "-qw", k])?;
    }
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let exe = exe.to_string_lossy().into_owned();
    for side in ["a", "b"] {
        let _ = std::fs::remove_file(n.dir.join(format!("gw-{side}.sock")));
    }
    // One pre-shared key for this run, from the operating system's random
    // source, in files only root can read.
    let psk = random_psk()?;
    // CHILD_SAs live a few seconds, so that they are rekeyed during the
    // transfer below.
    let child_lifetime = if opts.short { 3 } else { 4 };
    // The responder first, so the initiator's first IKE_SA_INIT is heard.
    for (g, side) in [("gB", "b"), ("gA", "a")] {
        let cfg = write_ike_gateway(&n.dir, side, &psk, child_lifetime)?;
        n.spawn(
            g,
            &format!("bitsgw-{side}"),
            &[&exe, "run", &cfg.to_string_lossy()],
        )?;
        wait_for_socket(n, &n.dir.join(format!("gw-{side}.sock")))?;
    }
    let sock_a = n.dir.join("gw-a.sock").to_string_lossy().into_owned();
    let ike_up = || -> Result<Option<String>> {
        let v = json(&bitsgw(&["show", "ike", "--json", "--socket", &sock_a])?)?;
        Ok(v["peers"][0]["child_sas"][0]["inbound_spi"]
            .as_str()
            .map(str::to_string))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let first_spi = loop {
        n.interrupted()?;
        if let Some(spi) = ike_up()? {
            break spi;
        }
        if std::time::Instant::now() > deadline {
            return Err(err("IKEv2 did not set up the tunnel in 20 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    out(
        "topology: hA - gA (bitsgw) - r - gB (bitsgw) - hB, ESP tunnel mode between the gateways, keyed by IKEv2 (pre-shared key)\n",
    );
    out("\ngateway A: IKE\n");
    out(&bitsgw(&["show", "ike", "--socket", &sock_a])?);
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
    let last_spi = ike_up()?.unwrap_or_default();
    out(&format!(
        "CHILD_SA inbound SPI {first_spi} at the start, {last_spi} after the transfer{}\n",
        if last_spi != first_spi {
            " (rekeyed under load)"
        } else {
            ""
        }
    ));
    out("\ngateway A: IKE\n");
    out(&bitsgw(&["show", "ike", "--socket", &sock_a])?);
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

/// Writes gateway `side`'s policy (the sites' prefixes protected by
/// IKE-keyed SAs, everything else discarded), its pre-shared key file
/// (mode 0600) and its configuration; the configuration's path.
fn write_ike_gateway(
    dir: &std::path::Path,
    side: &str,
    psk: &str,
    child_lifetime: u64,
) -> Result<std::path::PathBuf> {
    let a = side == "a";
    let (me, peer) = if a {
        ("203.0.113.1", "203.0.113.2")
    } else {
        ("203.0.113.2", "203.0.113.1")
    };
    let (local, remote) = if a {
        ("192.0.2.0/24", "198.51.100.0/24")
    } else {
        ("198.51.100.0/24", "192.0.2.0/24")
    };
    let (out, inb) = if a {
        ("a-to-b", "b-to-a")
    } else {
        ("b-to-a", "a-to-b")
    };
    let other = if a { "b" } else { "a" };
    let start = if a { "initiate" } else { "respond" };
    write(
        &dir.join(format!("ike-{side}.json")),
        &format!(
            r#"{{"spd": {{
  "outbound": [{{"name": "sites-out", "local": "{local}", "remote": "{remote}", "action": "protect", "sa": "{out}"}},
               {{"name": "default-discard-out", "action": "discard"}}],
  "inbound": [{{"name": "sites-in", "local": "{local}", "remote": "{remote}", "action": "protect", "sa": "{inb}"}},
              {{"name": "default-discard-in", "action": "discard"}}]}},
 "sad": [{{"name": "{out}", "direction": "outbound", "keyed_by": "ike", "mode": "tunnel", "tunnel": {{"local": "{me}", "remote": "{peer}"}}}},
         {{"name": "{inb}", "direction": "inbound", "keyed_by": "ike", "mode": "tunnel", "tunnel": {{"local": "{me}", "remote": "{peer}"}}, "replay_window": 1024}}]}}"#
        ),
    )?;
    write_secret(&dir.join(format!("ike-{side}.psk")), psk)?;
    let cfg = dir.join(format!("gw-{side}.json"));
    write(
        &cfg,
        &format!(
            r#"{{"role": "gateway", "policy": "ike-{side}.json",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "workers": 1, "pipeline": "run-to-completion", "control_socket": "{}", "state_dir": "gw-{side}-state",
  "addresses": {{"network": ["{me}/24"]}},
  "peers": [{{"name": "site-{other}", "local": "{me}", "remote": "{peer}",
    "local_id": "fqdn:gw-{side}.example", "remote_id": "fqdn:gw-{other}.example",
    "psk_file": "ike-{side}.psk",
    "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
    "child_lifetime_secs": {child_lifetime}, "rekey_jitter_secs": 1, "start": "{start}",
    "children": [{{"outbound": "{out}", "inbound": "{inb}"}}]}}]}}"#,
            dir.join(format!("gw-{side}.sock")).display()
        ),
    )?;
    Ok(cfg)
}
