//! Running code inside a named network namespace (`ip netns`).
//!
//! Sockets and TUN devices belong to the network namespace of the thread
//! that creates them and keep it for their whole life, wherever they are
//! used afterwards. [`run_in`] runs a closure on a thread of its own that
//! first enters the namespace, so the rest of the process is unaffected:
//! open a port there, hand it back, and use it from any thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::PortError;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a new thread inside the network namespace `name` (a name
/// under `/run/netns`, or a path such as `/proc/PID/ns/net`) and returns
/// its result. A panic in `f` is passed on to the caller.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, PortError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from(NETNS_DIR).join(name)
    };
    let err = |source| PortError::Namespace {
        name: name.to_owned(),
        source,
    };
    let ns = File::open(&path).map_err(err)?;
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns(2) takes a descriptor, which `ns` keeps open
                // for the call, and a flag; it changes only this thread's
                // namespace, and this thread is ours alone and ends with `f`.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(ns);
                Ok(f())
            })
            .join()
    });
    match joined {
        Ok(result) => result.map_err(err),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
