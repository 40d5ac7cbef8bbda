//! `bitsgw run` as a service: what it tells its service manager
//! (`sd_notify(3)`: readiness, status, reloads, the watchdog), and the
//! privileges it gives up once its ports and control socket are open.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd with
//! `Type=notify`) every notification is a no-op. The watchdog
//! (`WATCHDOG_USEC`, and `WATCHDOG_PID` when given) is fed at half its
//! interval, and only while every forwarding thread has gone round its
//! loop within that half: a stuck receive thread or worker stops the
//! feeding, and systemd restarts the appliance.

use crate::config::ApplianceConfig;
use bitsgw_pipeline::runner::Running;
use sd_notify::NotifyState;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The appliance's dealings with its service manager.
#[derive(Debug)]
pub struct Service {
    /// Half the watchdog interval: how often it is fed, and the oldest a
    /// forwarding thread's heartbeat may be for it to be fed.
    watchdog: Option<Duration>,
    next_feed: Instant,
    /// The thread found stuck, while it is.
    stuck: Option<String>,
    /// A notification could not be sent (said once in the log).
    failed: bool,
    #[cfg(debug_assertions)]
    stall: Option<DebugStall>,
}

impl Service {
    /// Reads the watchdog settings from the environment.
    pub fn from_env() -> Self {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(half) = watchdog {
            info!(
                feed_every_ms = half.as_millis() as u64,
                "watchdog enabled; fed while every forwarding thread is live"
            );
        }
        Service {
            watchdog,
            next_feed: Instant::now(),
            stuck: None,
            failed: false,
            #[cfg(debug_assertions)]
            stall: DebugStall::from_env(),
        }
    }

    fn notify(&mut self, state: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(state) {
            if !self.failed {
                self.failed = true;
                warn!("can not notify the service manager (NOTIFY_SOCKET): {e}");
            }
        }
    }

    /// Ports open, policies installed, the pipeline and the control socket
    /// serving: `READY=1`.
    pub fn ready(&mut self, status: &str) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins: `RELOADING=1` with the monotonic time systemd
    /// wants with it.
    pub fn reloading(&mut self) {
        let mut state = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            state.push(now);
        }
        state.push(NotifyState::Status("reloading the policy file"));
        self.notify(&state);
    }

    /// A reload ended: `READY=1` again, and its outcome as the status.
    pub fn reloaded(&mut self, outcome: Result<&str, &str>) {
        let status = match outcome {
            Ok(done) => format!("forwarding; last reload: {done}"),
            Err(why) => format!("forwarding with the previous policies; last reload: {why}"),
        };
        self.ready(&status);
    }

    /// Stopping: `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Called every turn of the main loop: feeds the watchdog when due and
    /// every forwarding thread is live; says when one is stuck and when it
    /// is live again.
    pub fn tick(&mut self, running: &Running) {
        #[cfg(debug_assertions)]
        if let Some(s) = self.stall.as_mut() {
            s.poll(running);
        }
        let Some(half) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if now < self.next_feed {
            return;
        }
        self.next_feed = now + half;
        match (running.stalled(half), self.stuck.take()) {
            (None, before) => {
                if let Some(thread) = before {
                    info!(thread, "forwarding thread live again; feeding the watchdog");
                    self.notify(&[NotifyState::Status(&format!(
                        "forwarding; thread {thread} is live again"
                    ))]);
                }
                self.notify(&[NotifyState::Watchdog]);
            }
            (Some(thread), before) => {
                if before.as_deref() != Some(thread) {
                    warn!(
                        thread,
                        "forwarding thread stuck; the watchdog is no longer fed"
                    );
                    self.notify(&[NotifyState::Status(&format!(
                        "forwarding thread {thread} is stuck; watchdog not fed"
                    ))]);
                }
                self.stuck = Some(thread.to_string());
            }
        }
    }
}

/// Gives up privileges once the ports, the control socket and the files
/// of `run` are open, before any other thread starts:
/// - with `"user"` and started as root: becomes that user (and its primary
///   group) with no capabilities and an empty bounding set;
/// - started as another user (systemd's `User=` with
///   `AmbientCapabilities=`): every capability it was given goes (and
///   `"user"`, if set, must be that user);
/// - started as root without `"user"`: keeps root's privileges, as asked.
pub fn give_up_privileges(cfg: &ApplianceConfig) -> Result<(), String> {
    let euid = bitsgw_io::process::effective_uid();
    let switch = match cfg.user {
        Some((uid, gid)) if euid == 0 => Some((uid, gid)),
        Some((uid, _)) if euid != uid => {
            return Err(format!(
                "{}: user: the appliance runs as uid {euid}, which can not become uid {uid}; start it as root or as that user",
                cfg.file.display()
            ))
        }
        Some(_) => None,
        None if euid == 0 => return Ok(()),
        None => None,
    };
    if let Some((uid, gid)) = switch {
        hand_over_state(&cfg.state_dir, uid, gid)?;
    }
    bitsgw_io::process::drop_privileges(switch)
        .map_err(|e| format!("can not give up privileges: {e}"))?;
    match switch {
        Some((uid, gid)) => info!(uid, gid, "now this user; no capabilities left"),
        None => info!(uid = euid, "privileges given up: no capabilities left"),
    }
    Ok(())
}

/// A test's stand-in for a stuck forwarding thread, in debug builds only
/// (release builds do not have this code): `BITSGW_DEBUG_STALL` =
/// `THREAD:AFTER_MS:FOR_MS` makes the forwarding thread named `THREAD`
/// (`bitsgw-rx-host`, `bitsgw-worker-0`...) sleep for `FOR_MS` once,
/// `AFTER_MS` after start.
#[cfg(debug_assertions)]
#[derive(Debug)]
struct DebugStall {
    thread: String,
    at: Instant,
    length: Duration,
}

#[cfg(debug_assertions)]
impl DebugStall {
    fn from_env() -> Option<Self> {
        let v = std::env::var("BITSGW_DEBUG_STALL").ok()?;
        let mut parts = v.split(':');
        let (thread, after, length) = (parts.next()?, parts.next()?, parts.next()?);
        Some(DebugStall {
            thread: thread.to_string(),
            at: Instant::now() + Duration::from_millis(after.parse().ok()?),
            length: Duration::from_millis(length.parse().ok()?),
        })
    }

    fn poll(&mut self, running: &Running) {
        if Instant::now() < self.at {
            return;
        }
        self.at = Instant::now() + Duration::from_secs(365 * 86400);
        let (thread, length) = (self.thread.clone(), self.length);
        warn!(
            thread,
            ms = length.as_millis() as u64,
            "debug build: stalling a forwarding thread"
        );
        running.stall(&thread, length);
    }
}

/// Gives the state directory (and what `run` made in it: the sequence
/// leases and their lock) to the user `run` becomes, which renews the
/// leases from then on: as systemd's `StateDirectory=` does for the unit.
/// Links are not followed.
fn hand_over_state(dir: &std::path::Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::lchown;
    let failed = |p: &std::path::Path, e: std::io::Error| {
        format!("{}: can not give it to uid {uid}: {e}", p.display())
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| failed(dir, e))?;
    if !meta.is_dir() {
        return Err(format!("{}: state_dir is not a directory", dir.display()));
    }
    lchown(dir, Some(uid), Some(gid)).map_err(|e| failed(dir, e))?;
    for entry in std::fs::read_dir(dir).map_err(|e| failed(dir, e))? {
        let path = entry.map_err(|e| failed(dir, e))?.path();
        lchown(&path, Some(uid), Some(gid)).map_err(|e| failed(&path, e))?;
    }
    Ok(())
}
