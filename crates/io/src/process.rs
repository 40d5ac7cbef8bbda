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
