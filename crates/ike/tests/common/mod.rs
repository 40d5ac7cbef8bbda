//! Network namespaces, veth links and processes for the strongSwan
//! interoperability tests, all removed when the [`Lab`] is dropped, also
//! when a test fails. Only documentation addresses are used. (The same
//! pattern as the workspace's tests/common, which this crate cannot use:
//! that one links the appliance binary.)
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod tshark;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Namespaces, the processes started in them and a scratch folder.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Scratch folder, removed on drop.
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

/// Whether the test runs as root.
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Lab {
    /// Namespaces `bi<tag><pid>-NAME` for each of `names`.
    pub fn new(tag: &str, names: &[&str]) -> Lab {
        assert!(is_root(), "this test needs root (network namespaces)");
        let prefix = format!("bi{tag}{}-", std::process::id());
        let dir = std::env::temp_dir().join(format!("bitsgw-ike-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            namespaces: names.iter().map(|n| format!("{prefix}{n}")).collect(),
            prefix,
            children: Vec::new(),
            dir,
        };
        for ns in &lab.namespaces {
            let out = Command::new("ip")
                .args(["netns", "add", ns])
                .output()
                .unwrap();
            assert!(out.status.success(), "ip netns add {ns}: {}", text(&out));
        }
        lab
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs a command in a namespace.
    pub fn try_exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Runs a command in a namespace that must succeed; its output.
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let out = self.try_exec(ns, args);
        assert!(out.status.success(), "{ns}: {args:?}: {}", text(&out));
        text(&out)
    }

    /// A veth pair, `a` in `from` with `addr_a`, `b` in `to` with
    /// `addr_b`, both up (IPv6 off, so nothing else crosses it).
    pub fn link(&self, from: &str, a: &str, addr_a: &str, to: &str, b: &str, addr_b: &str) {
        let peer = self.ns(to);
        self.exec(
            from,
            &[
                "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", &peer,
            ],
        );
        for (ns, dev, addr) in [(from, a, addr_a), (to, b, addr_b)] {
            self.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            self.exec(ns, &["ip", "link", "set", "lo", "up"]);
            self.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
            self.exec(ns, &["ip", "link", "set", dev, "up"]);
        }
    }

    /// Starts a process in a namespace, its output discarded; its index
    /// in the lab's children.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Sends SIGTERM to child `index` (started by this lab) and waits for
    /// it to exit.
    pub fn terminate(&mut self, index: usize) {
        let pid = self.children[index].id().to_string();
        let out = Command::new("kill").args(["-TERM", &pid]).output().unwrap();
        assert!(out.status.success(), "kill {pid}: {}", text(&out));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.children[index].try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{pid} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts capturing on `dev` of namespace `ns` into `file` (pcapng,
    /// dumpcap); returns once dumpcap says it captures. Stop it with
    /// [`Lab::stop_capture`].
    pub fn capture(&mut self, ns: &str, dev: &str, file: &std::path::Path) -> usize {
        let lines = self.spawn_lines(ns, &["dumpcap", "-i", dev, "-w", file.to_str().unwrap()]);
        let mut seen = Vec::new();
        let started = wait_line(
            &lines,
            &["stderr: Capturing on"],
            Duration::from_secs(10),
            &mut seen,
        );
        assert!(started.is_some(), "dumpcap on {ns}/{dev}: {seen:?}");
        self.children.len() - 1
    }

    /// Stops capture `index` once what it has seen is written: the kernel
    /// hands packets over in blocks, retired after a timeout, and dumpcap
    /// drops a block still open when it is stopped.
    pub fn stop_capture(&mut self, index: usize) {
        std::thread::sleep(Duration::from_millis(1200));
        self.terminate(index);
    }

    /// Starts a process in a namespace; its stdout and stderr lines arrive
    /// on the returned channel.
    pub fn spawn_lines(&mut self, ns: &str, args: &[&str]) -> Receiver<String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        self.children.push(child);
        rx
    }
}

/// Waits up to `limit` for a line starting with one of `prefixes`; every
/// line read is appended to `seen`.
pub fn wait_line(
    rx: &Receiver<String>,
    prefixes: &[&str],
    limit: Duration,
    seen: &mut Vec<String>,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let line = rx.recv_timeout(left).ok()?;
        seen.push(line.clone());
        if prefixes.iter().any(|p| line.starts_with(p)) {
            return Some(line);
        }
    }
}

/// Waits until `path` exists.
pub fn wait_for(path: &std::path::Path) {
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
