//! Helpers for tests that need root and network namespaces.
//!
//! Every namespace a test creates is named `bitsgw-io-<pid>-<tag>` and is
//! removed when its guard drops, also when the test fails. Traffic stays
//! inside it, on 192.0.2.0/24 and 2001:db8::/32.

#![allow(dead_code)]

use std::process::Command;

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "this test creates network namespaces, veth pairs and TUN devices: run it as root (CI does)"
    );
}

/// Runs a command and fails the test, with its output, if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace that exists as long as the guard does.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!("bitsgw-io-{}-{tag}", std::process::id());
        // A leftover of an earlier run with the same pid would make `add`
        // fail; it is ours to remove.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A veth pair `a`–`b` in the namespace, up and able to carry frames,
    /// with IPv6 off so no router solicitations or MLD reports cross it.
    ///
    /// `ip link set up` returns before the kernel's link watcher has given
    /// the devices their queueing discipline; until it has, transmitted
    /// frames are discarded without an error. So this waits until both ends
    /// report carrier and a qdisc other than `noop`.
    pub fn veth_pair(&self, a: &str, b: &str) {
        self.sh("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for dev in [a, b] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", &self.name, "link", "show", "dev", dev])
                    .output()
                    .expect("ip link show");
                let shown = String::from_utf8_lossy(&out.stdout);
                if shown.contains("LOWER_UP") && !shown.contains("qdisc noop") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{dev} did not come up in {}: {shown}",
                    self.name
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Runs a shell command inside the namespace.
    pub fn sh(&self, script: &str) {
        run("ip", &["netns", "exec", &self.name, "sh", "-c", script]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
