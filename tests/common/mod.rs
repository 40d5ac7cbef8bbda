//! Network-namespace labs for the integration tests: namespaces, veth
//! links and processes that are all removed when the lab is dropped, also
//! when a test fails. Addresses used with it come from the documentation
//! ranges only.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod ike;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A set of namespaces and the processes started in them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Processes started with [`Lab::spawn`], ended on drop.
    pub children: Vec<Child>,
    /// A scratch folder for configs and sockets, removed on drop.
    pub dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command.
pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed; returns its output.
pub fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the test runs as root (read from /proc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Waits until `path` exists (a control socket).
pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the `bitsgw` binary.
pub fn bitsgw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .args(args)
        .output()
        .unwrap()
}

/// `bitsgw show WHAT --json` of the gateway with control socket `socket`.
pub fn show(socket: &Path, what: &str) -> serde_json::Value {
    let out = bitsgw(&["show", what, "--json", "--socket", socket.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// SA `name` of `show sa --json`.
pub fn find_sa(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no SA {name} in {v}"))
        .clone()
}

impl Lab {
    /// Creates namespaces `bg<tag><pid>-NAME` for each of `names`.
    pub fn new(tag: &str, names: &[&str]) -> Lab {
        assert!(
            is_root(),
            "this test needs root (network namespaces); CI runs as root"
        );
        let prefix = format!("bg{tag}{}-", std::process::id());
        let dir = std::env::temp_dir().join(format!("bitsgw-lab-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            namespaces: names.iter().map(|n| format!("{prefix}{n}")).collect(),
            prefix,
            children: Vec::new(),
            dir,
        };
        for ns in &lab.namespaces {
            must(&["ip", "netns", "add", ns]);
        }
        lab
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs a command in a namespace.
    pub fn try_exec(&self, ns: &str, args: &[&str]) -> Output {
        let ns = self.ns(ns);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command in a namespace that must succeed.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let out = self.try_exec(ns, args);
        assert!(
            out.status.success(),
            "{ns}: {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A veth pair: `a` in namespace `from`, `b` in namespace `to`.
    pub fn link(&self, from: &str, a: &str, to: &str, b: &str) {
        let peer = self.ns(to);
        self.exec(
            from,
            &[
                "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", &peer,
            ],
        );
    }

    /// Brings `devs` up with the offloads a bump in the wire must not see
    /// (merged super-frames, checksums left for hardware) turned off; IPv6
    /// on them only if asked.
    pub fn up(&self, ns: &str, devs: &[&str], ipv6: bool) {
        let v6 = if ipv6 { "0" } else { "1" };
        self.exec(
            ns,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.all.disable_ipv6={v6}"),
            ],
        );
        self.exec(ns, &["ip", "link", "set", "lo", "up"]);
        for d in devs {
            if ipv6 {
                self.exec(
                    ns,
                    &[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv6.conf.{d}.disable_ipv6=0"),
                    ],
                );
            }
            self.exec(ns, &["ip", "link", "set", d, "up"]);
            let _ = self.try_exec(
                ns,
                &[
                    "ethtool", "-K", d, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
                ],
            );
        }
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> String {
        let out = self.exec(ns, &["cat", &format!("/sys/class/net/{dev}/address")]);
        out.trim().to_string()
    }

    /// Starts a process in a namespace (its output piped); returns its
    /// index in [`Lab::children`].
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> usize {
        let ns = self.ns(ns);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits until child `index` has made `socket` (its control socket),
    /// failing at once with its output if it exits first, and after 30 s
    /// with whatever it logged.
    pub fn wait_ready(&mut self, index: usize, socket: &Path) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            let exited = self.children[index].try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let child = &mut self.children[index];
                if exited.is_none() {
                    let _ = child.kill();
                }
                let mut log = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut log);
                }
                panic!(
                    "{} never appeared ({}): {log}",
                    socket.display(),
                    exited.map_or("still running after 30 s".into(), |s| s.to_string())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills child `index` with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, index: usize) {
        let pid = self.children[index].id().to_string();
        must(&["kill", "-KILL", &pid]);
        let _ = self.children[index].wait();
    }

    /// Sends SIGTERM to child `index` and waits (at most 10 s) for it to
    /// exit; returns whether it exited successfully, its stdout and stderr.
    pub fn terminate(&mut self, index: usize) -> (bool, String, String) {
        self.terminate_within(index, Duration::from_secs(10))
    }

    /// [`Lab::terminate`], failing when the process takes longer than
    /// `limit` to exit.
    pub fn terminate_within(&mut self, index: usize, limit: Duration) -> (bool, String, String) {
        use std::io::Read;
        let pid = self.children[index].id().to_string();
        must(&["kill", "-TERM", &pid]);
        let child = &mut self.children[index];
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut o) = child.stdout.take() {
            o.read_to_string(&mut out).unwrap();
        }
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        (status.success(), out, err)
    }
}

/// Frames received on interface `dev` of namespace `ns`, captured with
/// bitsgw's own AF_PACKET port until `stop` is set.
pub fn capture(
    ns: String,
    dev: &'static str,
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let port = bitsgw_io::netns::run_in(&ns, move || bitsgw_io::af_packet(dev))
            .unwrap()
            .unwrap();
        let mut rx = port.rx;
        let mut buf = bitsgw_wire::PacketBuf::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok(true) = rx.recv(&mut buf) {
                frames.lock().unwrap().push(buf.data().to_vec());
            }
        }
    })
}

/// One iperf3 TCP transfer of `seconds` from namespace `client` to a
/// one-shot server in `server` bound to `address`; the client's JSON
/// report. The server needs a moment to listen, so the client tries a
/// few times.
pub fn iperf3(
    lab: &mut Lab,
    client: &str,
    server: &str,
    address: &str,
    seconds: &str,
) -> serde_json::Value {
    let srv = lab.spawn(server, &["iperf3", "-s", "-1", "-B", address]);
    let mut out = lab.try_exec(client, &["true"]);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        out = lab.try_exec(client, &["iperf3", "-c", address, "-t", seconds, "-J"]);
        if out.status.success() {
            break;
        }
    }
    assert!(
        out.status.success(),
        "iperf3 from {client}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = lab.children[srv].wait();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The two-site lab: host A, gateway A, a middle box `r`, gateway B, host
/// B in a row, joined by veth pairs (`hA:eth0`-`gA:host`, `gA:wan`-`r:ra`,
/// `r:rb`-`gB:wan`, `gB:host`-`hB:eth0`), all up, IPv6 off.
pub fn link_two_sites(lab: &Lab) {
    lab.link("hA", "eth0", "gA", "host");
    lab.link("gA", "wan", "r", "ra");
    lab.link("r", "rb", "gB", "wan");
    lab.link("gB", "host", "hB", "eth0");
    lab.up("hA", &["eth0"], false);
    lab.up("gA", &["host", "wan"], false);
    lab.up("r", &["ra", "rb"], false);
    lab.up("gB", &["host", "wan"], false);
    lab.up("hB", &["eth0"], false);
}

/// The two-site lab linked ([`link_two_sites`]) and addressed: host A
/// 192.0.2.10 and host B 198.51.100.20 routed through the router `r`
/// (their gateways' host-side addresses), which reaches the tunnel
/// endpoints 203.0.113.1 and .2 in the bumps at the hosts' MACs.
pub fn route_two_sites(lab: &Lab) {
    link_two_sites(lab);
    lab.exec("hA", &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    lab.exec("hA", &["ip", "link", "set", "eth0", "mtu", "1400"]);
    lab.exec("hA", &["ip", "route", "add", "default", "via", "192.0.2.1"]);
    lab.exec(
        "hB",
        &["ip", "addr", "add", "198.51.100.20/24", "dev", "eth0"],
    );
    lab.exec("hB", &["ip", "link", "set", "eth0", "mtu", "1400"]);
    lab.exec(
        "hB",
        &["ip", "route", "add", "default", "via", "198.51.100.1"],
    );
    lab.exec("r", &["ip", "addr", "add", "192.0.2.1/24", "dev", "ra"]);
    lab.exec("r", &["ip", "addr", "add", "198.51.100.1/24", "dev", "rb"]);
    for k in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.ra.rp_filter=0",
        "net.ipv4.conf.rb.rp_filter=0",
    ] {
        lab.exec("r", &["sysctl", "-qw", k]);
    }
    // The tunnel endpoints live in the bumps, which have no IP stack of
    // their own: the router reaches them at the hosts' MAC addresses,
    // through the bump on the path.
    reach_through_bump(lab, "203.0.113.1", "ra", "hA");
    reach_through_bump(lab, "203.0.113.2", "rb", "hB");
}

/// Makes the router `r` reach `addr`, an address in the bump on its link
/// `dev`, at the MAC of `host` behind that bump (the bump passes the
/// frame on or takes it).
pub fn reach_through_bump(lab: &Lab, addr: &str, dev: &str, host: &str) {
    let mac = lab.mac(host, "eth0");
    lab.exec(
        "r",
        &["ip", "route", "add", &format!("{addr}/32"), "dev", dev],
    );
    lab.exec(
        "r",
        &["ip", "neigh", "add", addr, "lladdr", &mac, "dev", dev],
    );
}

/// What crossed between the two-site lab's gateways: (ESP frames, IKE
/// datagrams); panics on any cleartext IPv4 frame of the hosts.
pub fn between_gateways(frames: &[Vec<u8>]) -> (usize, usize) {
    let (mut esp, mut ike) = (0, 0);
    for f in frames {
        if f.len() < 34 || u16::from_be_bytes([f[12], f[13]]) != 0x0800 {
            continue;
        }
        let ip = &f[14..];
        let (src, dst) = (&ip[12..16], &ip[16..20]);
        let hosts = [[192, 0, 2, 10], [198, 51, 100, 20]];
        assert!(
            !hosts.iter().any(|h| src == h || dst == h),
            "cleartext host traffic on the wire: {:02x?}",
            &ip[..20]
        );
        let header = usize::from(ip[0] & 0x0f) * 4;
        match ip[9] {
            50 => esp += 1,
            17 => {
                let port = u16::from_be_bytes([ip[header + 2], ip[header + 3]]);
                if port == 500 || port == 4500 {
                    ike += 1;
                }
            }
            _ => {}
        }
    }
    (esp, ike)
}

/// The control socket of gateway `side` ("a" or "b") of the two-site lab.
pub fn gateway_socket(lab: &Lab, side: &str) -> PathBuf {
    lab.dir.join(format!("gw-{side}.sock"))
}

/// Writes the configuration of gateway `side` of the two-site lab: inline
/// on its `host` and `wan` interfaces with a copy of
/// `policies/site-to-site-SIDE.json` in the lab's directory (which a test
/// may change and reload); both ways of running: A hands frames to
/// workers, B runs to completion.
pub fn gateway_config(lab: &Lab, side: &str) -> PathBuf {
    let policy = lab.dir.join(format!("site-to-site-{side}.json"));
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("policies/site-to-site-{side}.json")),
        &policy,
    )
    .unwrap();
    let path = lab.dir.join(format!("gw-{side}.json"));
    let pipeline = if side == "a" {
        r#""workers": 2"#
    } else {
        r#""workers": 1, "pipeline": "run-to-completion""#
    };
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  {}, "control_socket": "{}", "state_dir": "gw-{side}-state"}}"#,
        policy.display(),
        pipeline,
        gateway_socket(lab, side).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts gateways A and B of the two-site lab and waits until both
/// answer on their control sockets; their indexes in [`Lab::children`].
pub fn start_gateways(lab: &mut Lab) -> (usize, usize) {
    start_gateways_with(lab, serde_json::json!({}))
}

/// [`start_gateways`] with the fields of `extra_a` added to gateway A's
/// configuration.
pub fn start_gateways_with(lab: &mut Lab, extra_a: serde_json::Value) -> (usize, usize) {
    let (cfg_a, cfg_b) = (gateway_config(lab, "a"), gateway_config(lab, "b"));
    let mut a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_a).unwrap()).unwrap();
    for (k, v) in extra_a.as_object().into_iter().flatten() {
        a[k] = v.clone();
    }
    std::fs::write(&cfg_a, a.to_string()).unwrap();
    let gw_a = lab.spawn(
        "gA",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg_a.to_str().unwrap()],
    );
    let gw_b = lab.spawn(
        "gB",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg_b.to_str().unwrap()],
    );
    lab.wait_ready(gw_a, &gateway_socket(lab, "a"));
    lab.wait_ready(gw_b, &gateway_socket(lab, "b"));
    (gw_a, gw_b)
}

/// The lock files appliances make for `host` and `wan` in these
/// namespaces, removed on drop: a killed appliance (SIGKILL in the test,
/// or the lab's cleanup after a failure) holds no lock any more but
/// leaves its file, and so does one that gave up root (`"user"`), which
/// may not remove it from root's directory.
pub struct LockFiles(Vec<PathBuf>);

impl LockFiles {
    pub fn of(lab: &Lab, namespaces: &[&str]) -> LockFiles {
        let mut files = Vec::new();
        for ns in namespaces {
            let ino = std::os::unix::fs::MetadataExt::ino(
                &std::fs::metadata(format!("/run/netns/{}", lab.ns(ns))).unwrap(),
            );
            for dev in ["host", "wan"] {
                files.push(PathBuf::from(format!("/run/bitsgw/netns-{ino}-{dev}.lock")));
            }
        }
        LockFiles(files)
    }
}

impl Drop for LockFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Reads and parses a policy file (the IPsec crate parses text only).
pub fn policy_file(path: &Path) -> bitsgw_ipsec::config::PolicySet {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bitsgw_ipsec::config::parse_policy(&text, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// strongSwan's IKE daemon (Debian's package, as `scripts/setup-test-deps.sh`
/// installs it).
pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// Starts charon in namespace `ns` with its files in `dir` (its own
/// strongswan.conf, vici socket, log and /run) and loads `swanctl_conf`;
/// its index in [`Lab::children`]. ESP runs in userspace through
/// kernel-libipsec (this kernel has no ESP), which carries ESP in UDP
/// only, and charon routes the CHILD_SAs' traffic to it.
pub fn start_charon(lab: &mut Lab, ns: &str, dir: &Path, swanctl_conf: &str) -> usize {
    start_charon_logging(lab, ns, dir, swanctl_conf, "")
}

/// [`start_charon`] logging IKE and CHILD_SA details at level 4, which
/// include every key charon derives: for decoding a capture, never in a
/// measurement.
pub fn start_charon_logging_keys(lab: &mut Lab, ns: &str, dir: &Path, swanctl_conf: &str) -> usize {
    start_charon_logging(lab, ns, dir, swanctl_conf, "ike = 4\n      chd = 4")
}

fn start_charon_logging(
    lab: &mut Lab,
    ns: &str,
    dir: &Path,
    swanctl_conf: &str,
    levels: &str,
) -> usize {
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let d = dir.display();
    // kernel-libipsec must come before kernel-netlink, or installing the
    // SAs fails (netlink error 38).
    let conf = format!(
        r#"charon {{
  load_modular = no
  load = random nonce openssl gcm aes sha1 sha2 hmac kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici
  install_routes = yes
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {d}/charon.log
      flush_line = yes
      default = 1
      {levels}
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("strongswan.conf"), conf).unwrap();
    let file = dir.join("swanctl.conf");
    std::fs::write(&file, swanctl_conf).unwrap();
    // Its own mount namespace (ip netns exec makes one), so that charon's
    // fixed pid file lands in this instance's own /run.
    let script = format!("mount --bind {d}/run /run && exec {CHARON} >{d}/charon.out 2>&1");
    let env = format!("STRONGSWAN_CONF={d}/strongswan.conf");
    let pid = lab.spawn(ns, &["env", &env, "sh", "-c", &script]);
    wait_for(&dir.join("charon.vici"));
    swanctl(
        lab,
        ns,
        dir,
        &["--load-all", "--file", file.to_str().unwrap()],
    );
    pid
}

/// charon's connection `bitsgw` (child `net`, tunnel mode, the given
/// labs' proposals) between gw-a.example and gw-b.example with a PSK.
pub struct SwanConnection<'a> {
    /// Which of them charon is: "a" or "b".
    pub side: &'a str,
    pub local_addrs: &'a str,
    pub remote_addrs: &'a str,
    pub local_ts: &'a str,
    pub remote_ts: &'a str,
    /// Force UDP encapsulation (a faked NAT), as kernel-libipsec needs
    /// when there is no real NAT.
    pub encap: bool,
    pub psk: &'a str,
    /// The IKE and ESP proposals, in swanctl's notation.
    pub proposals: (&'a str, &'a str),
    /// Settings added to the connection and to its CHILD_SA.
    pub extra: (&'a str, &'a str),
}

impl SwanConnection<'_> {
    /// Its swanctl.conf.
    pub fn conf(&self) -> String {
        let other = if self.side == "a" { "b" } else { "a" };
        format!(
            r#"connections {{
  bitsgw {{
    version = 2
    local_addrs = {local_addrs}
    remote_addrs = {remote_addrs}
    proposals = {ike}
    encap = {encap}
    mobike = no
    {ike_extra}
    local {{
      auth = psk
      id = gw-{side}.example
    }}
    remote {{
      auth = psk
      id = gw-{other}.example
    }}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        mode = tunnel
        esp_proposals = {esp}
        {child_extra}
      }}
    }}
  }}
}}
secrets {{
  ike-bitsgw {{
    id-a = gw-a.example
    id-b = gw-b.example
    secret = "{psk}"
  }}
}}
"#,
            local_addrs = self.local_addrs,
            remote_addrs = self.remote_addrs,
            encap = if self.encap { "yes" } else { "no" },
            side = self.side,
            local_ts = self.local_ts,
            remote_ts = self.remote_ts,
            psk = self.psk,
            ike = self.proposals.0,
            esp = self.proposals.1,
            ike_extra = self.extra.0,
            child_extra = self.extra.1,
        )
    }
}

/// Runs swanctl against the charon whose files are in `dir`.
pub fn swanctl(lab: &Lab, ns: &str, dir: &Path, args: &[&str]) -> String {
    let uri = format!("unix://{}/charon.vici", dir.display());
    let mut full = vec!["swanctl"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--uri", &uri]);
    let out = lab.try_exec(ns, &full);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{ns}: swanctl {args:?} failed: {text}\ncharon log:\n{}",
        std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default()
    );
    text
}

/// Frames captured on the router's two links.
pub type Frames = Arc<Mutex<Vec<Vec<u8>>>>;

/// The lab built, with the router capturing what each gateway sends until
/// the flag is set.
pub fn lab_with_captures(
    tag: &str,
) -> (
    Lab,
    Arc<AtomicBool>,
    Frames,
    [std::thread::JoinHandle<()>; 2],
) {
    let lab = Lab::new(tag, &["hA", "gA", "r", "gB", "hB"]);
    route_two_sites(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let caps = [
        capture(lab.ns("r"), "ra", Arc::clone(&stop), Arc::clone(&seen)),
        capture(lab.ns("r"), "rb", Arc::clone(&stop), Arc::clone(&seen)),
    ];
    (lab, stop, seen, caps)
}
