//! The lab's network namespaces and the processes started in them, all
//! removed again when the lab ends.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Namespaces, the processes started in them, and a scratch folder; all
/// removed on drop.
pub(super) struct Netns {
    prefix: String,
    names: Vec<String>,
    pub(super) children: Vec<(String, Child)>,
    pub(super) dir: PathBuf,
    keep_dir: bool,
    stop: Arc<AtomicBool>,
}

/// The prefix of every namespace a lab makes, per scenario (one lab of a
/// kind at a time; a leftover of a killed run is removed when the next one
/// starts).
pub(super) fn prefix(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Mobility => "bglm-",
        Scenario::SiteToSite => "bgls-",
    }
}

pub(super) fn run_cmd(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("{}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Netns {
    pub(super) fn new(
        prefix: &str,
        names: &[&str],
        dir: PathBuf,
        keep_dir: bool,
        stop: Arc<AtomicBool>,
    ) -> Result<Netns> {
        // Leftovers of a run that was killed before it could clean up.
        if let Ok(list) = run_cmd(&["ip", "netns", "list"]) {
            for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
                if ns.starts_with(prefix) {
                    let _ = run_cmd(&["ip", "netns", "del", ns]);
                }
            }
        }
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let mut n = Netns {
            prefix: prefix.to_string(),
            names: Vec::new(),
            children: Vec::new(),
            dir,
            keep_dir,
            stop,
        };
        for name in names {
            let full = format!("{}{name}", n.prefix);
            run_cmd(&["ip", "netns", "add", &full])?;
            n.names.push(full);
            n.exec(name, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(n)
    }

    pub(super) fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(super) fn exec(&self, ns: &str, args: &[&str]) -> Result<String> {
        let full = self.ns(ns);
        let mut v = vec!["ip", "netns", "exec", &full];
        v.extend_from_slice(args);
        run_cmd(&v)
    }

    /// Runs a list of commands in `ns`, each a whitespace-separated line.
    pub(super) fn script(&self, ns: &str, lines: &[&str]) -> Result<()> {
        for l in lines {
            let args: Vec<&str> = l.split_whitespace().collect();
            self.exec(ns, &args)?;
        }
        Ok(())
    }

    pub(super) fn sysctl_router(&self, ns: &str) -> Result<()> {
        self.script(
            ns,
            &[
                "sysctl -qw net.ipv4.ip_forward=1",
                "sysctl -qw net.ipv6.conf.all.forwarding=1",
                "sysctl -qw net.ipv4.conf.all.rp_filter=0",
                "sysctl -qw net.ipv4.conf.default.rp_filter=0",
                "sysctl -qw net.ipv6.conf.all.accept_dad=0",
                "sysctl -qw net.ipv6.conf.default.accept_dad=0",
            ],
        )
    }

    /// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
    pub(super) fn link(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        let (na, nb) = (self.ns(a), self.ns(b));
        run_cmd(&[
            "ip", "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if, "netns",
            &nb,
        ])?;
        for (ns, dev) in [(a, a_if), (b, b_if)] {
            self.exec(ns, &["ip", "link", "set", dev, "up"])?;
            // Checksums and segmentation in software: a bump that reads
            // frames off the wire must see them whole and checksummed.
            let _ = self.exec(
                ns,
                &[
                    "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
                ],
            );
        }
        Ok(())
    }

    /// Starts a process in `ns`, its output in `<dir>/<label>.log`.
    pub(super) fn spawn(&mut self, ns: &str, label: &str, args: &[&str]) -> Result<()> {
        let log = self.dir.join(format!("{label}.log"));
        let file =
            std::fs::File::create(&log).map_err(|e| err(format!("{}: {e}", log.display())))?;
        let file2 = file.try_clone().map_err(|e| err(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2)
            .spawn()
            .map_err(|e| err(format!("{}: {e}", args.join(" "))))?;
        self.children.push((label.to_string(), child));
        Ok(())
    }

    /// Whether every process started is still running; the name and log of
    /// one that is not.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        for (label, c) in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                if label.starts_with("bitsgw") {
                    let log = std::fs::read_to_string(self.dir.join(format!("{label}.log")))
                        .unwrap_or_default();
                    return Err(err(format!("{label} exited ({status}):\n{log}")));
                }
            }
        }
        Ok(())
    }

    /// Ends a process the lab started (SIGTERM, then SIGKILL) and waits.
    pub(super) fn end(&mut self, label: &str) {
        if let Some(i) = self.children.iter().position(|(l, _)| l == label) {
            let (_, mut c) = self.children.remove(i);
            terminate(&mut c);
        }
    }

    pub(super) fn interrupted(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(err("interrupted"));
        }
        Ok(())
    }
}

/// SIGTERM to a child we started, by its PID, then SIGKILL if it lingers.
pub(super) fn terminate(c: &mut Child) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(c.id()) {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            terminate(c);
        }
        for ns in &self.names {
            let _ = run_cmd(&["ip", "netns", "del", ns]);
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
