//! What the appliance process promises about itself and the files it
//! makes: no core dumps with keys in them, private files that are never
//! reached through a planted link, and one appliance per interface.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Makes the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core
/// dump is written when it crashes, and without `CAP_SYS_PTRACE` no other
/// process, not even one of the same user, can attach to it or read its
/// memory through `/proc/PID/mem` (see `proc(5)`, `ptrace(2)` "Ptrace
/// access mode checking"). Called before any key is loaded, so no key is
/// ever in a dump. It is inherited across `fork` and reset by `execve`.
pub fn forbid_core_dumps() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes plain integer arguments and no
    // pointers; the result is checked below.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process is dumpable (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> io::Result<bool> {
    // SAFETY: PR_GET_DUMPABLE takes no pointers; the result is checked.
    let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc != 0)
}

/// The process's effective user ID.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and always succeeds.
    unsafe { libc::geteuid() }
}

/// Why privileges could not be given up. The appliance refuses to go on
/// with more privilege than it said it would keep.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// A system call that changes the process's identity failed.
    #[error("{call}: {source}")]
    Identity {
        /// The call (`setgroups`, `setresgid`, `setresuid`, `prctl`).
        call: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// A capability set could not be read or changed.
    #[error("capabilities: {0}")]
    Capabilities(#[from] caps::errors::CapsError),
    /// The process is not the user it should have become.
    #[error(
        "still running as uid {uid} gid {gid} after switching to uid {want_uid} gid {want_gid}"
    )]
    NotSwitched {
        /// The real/effective/saved uid found (all alike or the first that differs).
        uid: u32,
        /// The gid found.
        gid: u32,
        /// The uid asked for.
        want_uid: u32,
        /// The gid asked for.
        want_gid: u32,
    },
    /// A capability is still permitted after they were all given up.
    #[error("capabilities still permitted after giving them all up: {0}")]
    StillPermitted(String),
}

/// Gives up every privilege the process holds, for good: with
/// `user = Some((uid, gid))` it becomes that user and group (supplementary
/// groups: `gid` alone), and in every case its capability sets (effective,
/// permitted, inheritable, ambient) are emptied and, where it may (it
/// holds `CAP_SETPCAP`), its bounding set too, and `no_new_privs` is set,
/// so no later `execve` regains any. Called once the packet sockets, TUN devices and control
/// socket are open and before any other thread starts: capability sets
/// belong to a thread, and threads started afterwards inherit the empty
/// ones. What the appliance does from then on needs no privilege: an
/// open packet socket sends, receives and is bound again to an interface
/// that came back without `CAP_NET_RAW` (only making one is checked, see
/// `packet(7)`).
pub fn drop_privileges(user: Option<(u32, u32)>) -> Result<(), PrivilegeError> {
    use caps::CapSet;
    // While CAP_SETPCAP is still there: the bounding set.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP)? {
        caps::clear(None, CapSet::Bounding)?;
    }
    if let Some((uid, gid)) = user {
        let identity = |call, rc: libc::c_int| {
            if rc < 0 {
                Err(PrivilegeError::Identity {
                    call,
                    source: io::Error::last_os_error(),
                })
            } else {
                Ok(())
            }
        };
        let groups = [gid as libc::gid_t];
        // SAFETY: setgroups(2) reads `groups.len()` gids from the pointer,
        // which points at that many; the result is checked.
        identity("setgroups", unsafe {
            libc::setgroups(groups.len(), groups.as_ptr())
        })?;
        // SAFETY: setresgid(2) and setresuid(2) take plain integers; glibc
        // applies them to every thread of the process; results checked.
        identity("setresgid", unsafe { libc::setresgid(gid, gid, gid) })?;
        // SAFETY: as above.
        identity("setresuid", unsafe { libc::setresuid(uid, uid, uid) })?;
        let (ids_uid, ids_gid) = ids()?;
        if ids_uid.iter().any(|u| *u != uid) || ids_gid.iter().any(|g| *g != gid) {
            return Err(PrivilegeError::NotSwitched {
                uid: ids_uid.iter().copied().find(|u| *u != uid).unwrap_or(uid),
                gid: ids_gid.iter().copied().find(|g| *g != gid).unwrap_or(gid),
                want_uid: uid,
                want_gid: gid,
            });
        }
    }
    // The kernel emptied the permitted and effective sets when every uid
    // left 0 (no PR_SET_KEEPCAPS); a process started with ambient
    // capabilities (systemd's AmbientCapabilities=) keeps them until here.
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    caps::clear(None, CapSet::Effective)?;
    caps::clear(None, CapSet::Permitted)?;
    // And no execve can give any back (set-user-ID files, file
    // capabilities).
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; result checked.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(PrivilegeError::Identity {
            call: "prctl(PR_SET_NO_NEW_PRIVS)",
            source: io::Error::last_os_error(),
        });
    }
    let left = caps::read(None, CapSet::Permitted)?;
    if !left.is_empty() {
        let mut names: Vec<String> = left.iter().map(ToString::to_string).collect();
        names.sort();
        return Err(PrivilegeError::StillPermitted(names.join(", ")));
    }
    Ok(())
}

/// The real, effective and saved user and group IDs.
fn ids() -> Result<([u32; 3], [u32; 3]), PrivilegeError> {
    let (mut ru, mut eu, mut su) = (0, 0, 0);
    let (mut rg, mut eg, mut sg) = (0, 0, 0);
    // SAFETY: getresuid(2) and getresgid(2) write one id through each
    // pointer, each to a live local; the results are checked.
    let rc = unsafe { libc::getresuid(&mut ru, &mut eu, &mut su) };
    // SAFETY: as above.
    let rc2 = unsafe { libc::getresgid(&mut rg, &mut eg, &mut sg) };
    if rc < 0 || rc2 < 0 {
        return Err(PrivilegeError::Identity {
            call: "getresuid",
            source: io::Error::last_os_error(),
        });
    }
    Ok(([ru, eu, su], [rg, eg, sg]))
}

/// Makes `dir` (and its missing parents, mode 0700) a directory that only
/// this user can write to; refuses one that belongs to another user or
/// that its group or others can write to, since whoever can write to it
/// can put links or files where ours are to go.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if !meta.is_dir() {
        return refuse("not a directory".into());
    }
    let uid = effective_uid();
    if meta.uid() != uid {
        return refuse(format!(
            "belongs to user {}, not to this process's user {uid}",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return refuse(format!(
            "group or others can write to it (mode {:o}); make it 0700 or 0755",
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Creates `path` as a fresh file, mode 0600 whatever the umask, opened
/// for writing. Something already there (a file, or a symbolic link,
/// which is never followed) is removed first: the link itself, never
/// what it points to. Opening with `O_CREAT | O_EXCL | O_NOFOLLOW` then
/// fails rather than write through anything planted in between.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // The umask can only take bits away; this sets exactly 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Where [`InterfaceLock`]s live unless told otherwise.
pub const LOCK_DIR: &str = "/run/bitsgw";

/// Why an interface could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the interface.
    #[error(
        "interface {interface} is already in use by another bitsgw{}; two appliances on one interface would both forward every frame",
        holder.map(|p| format!(" (PID {p})")).unwrap_or_default()
    )]
    Held {
        /// The interface.
        interface: String,
        /// The holder's PID, as it wrote it into the lock file.
        holder: Option<u32>,
    },
    /// The lock file or its directory could not be made or locked.
    #[error("interface {interface}: lock file {}: {source}", file.display())]
    Io {
        /// The interface.
        interface: String,
        /// The lock file.
        file: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// An exclusive claim on one interface of one network namespace, held
/// for as long as the value lives (and by the kernel, as an `flock`, for
/// as long as the process lives: a killed appliance leaves no stale
/// claim). Interface names repeat across namespaces, so the claim is keyed
/// on the namespace's identity (the inode of `/proc/thread-self/ns/net`)
/// and the name.
#[derive(Debug)]
pub struct InterfaceLock {
    file: File,
    path: PathBuf,
}

impl InterfaceLock {
    /// Claims `interface` in the calling thread's network namespace, with
    /// a lock file in `dir` (made 0700 if missing). Another holder is
    /// refused naming the interface and the holder's PID.
    pub fn acquire(dir: &Path, interface: &str) -> Result<InterfaceLock, LockError> {
        let fail = |file: &Path, source| LockError::Io {
            interface: interface.to_owned(),
            file: file.to_owned(),
            source,
        };
        if interface.is_empty() || interface.contains(['/', '\0']) {
            return Err(fail(
                dir,
                io::Error::new(io::ErrorKind::InvalidInput, "not an interface name"),
            ));
        }
        private_dir(dir).map_err(|e| fail(dir, e))?;
        let netns = std::fs::metadata("/proc/thread-self/ns/net")
            .map_err(|e| fail(Path::new("/proc/thread-self/ns/net"), e))?
            .ino();
        let path = dir.join(format!("netns-{netns}-{interface}.lock"));
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| fail(&path, e))?;
            // SAFETY: flock(2) takes a descriptor, which `file` keeps open
            // for the call, and a flag; the result is checked.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::WouldBlock {
                    return Err(fail(&path, err));
                }
                let mut text = String::new();
                let holder = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    interface: interface.to_owned(),
                    holder,
                });
            }
            // A holder that was stopping may have removed the file after
            // we opened it: then the lock is on a file nobody else will
            // find, and it is taken again on the one now at the path.
            let same = std::fs::symlink_metadata(&path).ok().map(|m| m.ino())
                == file.metadata().ok().map(|m| m.ino());
            if !same {
                continue;
            }
            file.set_len(0).map_err(|e| fail(&path, e))?;
            file.rewind().map_err(|e| fail(&path, e))?;
            writeln!(file, "{}", std::process::id()).map_err(|e| fail(&path, e))?;
            return Ok(InterfaceLock { file, path });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InterfaceLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes with the descriptor.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bitsgw-io-process-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_lock_on_an_interface_is_refused_naming_the_holder() {
        let dir = scratch("lock");
        let first = InterfaceLock::acquire(&dir, "veth-a").unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let e = InterfaceLock::acquire(&dir, "veth-a").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("veth-a"), "{text}");
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        // Another interface is free.
        let other = InterfaceLock::acquire(&dir, "veth-b").unwrap();
        drop(first);
        // Released: claimed again.
        let again = InterfaceLock::acquire(&dir, "veth-a").unwrap();
        drop((other, again));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_are_0600_fresh_and_never_follow_links() {
        let dir = scratch("private");
        private_dir(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let trap = dir.join("trap");
        std::os::unix::fs::symlink(&victim, &trap).unwrap();
        let mut f = create_private_file(&trap).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(&trap).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&trap).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_others_can_write_to_are_refused() {
        let dir = scratch("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("others can write"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_process_can_be_made_non_dumpable() {
        // The flag is the process's, whichever thread sets it.
        let setter = std::thread::spawn(forbid_core_dumps);
        setter.join().unwrap().unwrap();
        assert!(!is_dumpable().unwrap());
    }
}
