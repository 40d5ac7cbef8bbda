//! The control socket of a running appliance: one JSON request per line,
//! one JSON answer per line, over a Unix socket.
//!
//! Requests ([`ControlRequest`], parsed and framed in
//! `control_request.rs`): `{"show": "all"}` (SAs, SPD with hits, counters,
//! events), `{"show": "bindings"}` (the `ha` role's binding cache, the `mn`
//! role's registration), `{"remove_sa": NAME}`, `{"reload": true}`, and in
//! the `mn` role `{"move": ATTACHMENT, "break": BOOL}` and
//! `{"refresh": true}`. Answers are the data, `{"ok": TEXT}` or
//! `{"error": TEXT}`.
//!
//! Who may connect is decided by the socket's mode alone: 0600 (0660 with
//! a configured group), set before the socket appears at its path, so the
//! umask never matters. Clients are served by a thread of their own, never
//! by the main loop: each has [`REQUEST_TIME`] to send a line of at most
//! [`MAX_LINE`] octets and [`WRITE_TIME`] to take its answer, and at most
//! [`MAX_CLIENTS`] are served at once; when all places are taken, the
//! client that has waited longest without sending its request gives its
//! place up. The main loop only sees complete requests
//! ([`Request`]) and hands the answers back without waiting for a client.

pub use crate::control_request::MAX_LINE;
use crate::control_request::{ControlRequest, Framed, LineFramer};
use crate::log_limit::SharedLogLimit;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// Clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// How long a client has to send its whole request line.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// How long a client has to take its whole answer.
pub const WRITE_TIME: Duration = Duration::from_secs(5);
/// How often each kind of warning a storm of clients could repeat is
/// logged, at most.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
static ACCEPT_ERRORS: SharedLogLimit = SharedLogLimit::new(WARN_INTERVAL);
static THREAD_ERRORS: SharedLogLimit = SharedLogLimit::new(WARN_INTERVAL);
static SLOW_CLIENTS: SharedLogLimit = SharedLogLimit::new(WARN_INTERVAL);
/// How long a client waits for the appliance to answer (a reload waits for
/// every worker).
const ANSWER_TIME: Duration = Duration::from_secs(10);

/// A bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket, so that only ours is removed.
    identity: (u64, u64),
}

/// Binds the control socket at `path`: mode 0600, or 0660 and owned by
/// `group`; the directories it creates for it 0700 (0750 and `group`'s).
/// A stale socket of ours (nobody answers on it) is replaced; anything
/// else at `path` is refused and left in place.
pub fn bind(path: &Path, group: Option<u32>) -> Result<ControlSocket, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (dir_mode, socket_mode) = match group {
        Some(_) => (0o750, 0o660),
        None => (0o700, 0o600),
    };
    create_dirs(dir, dir_mode, group)?;
    // The socket is bound in a private directory, given its mode and group
    // there, and only then linked to `path`: it never appears at `path`
    // with the umask's mode, and a link never replaces what is there.
    // A name nobody has (what is there already is never touched).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = dir.join(format!(".bitsgw-{}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(shown(&staging))?;
    let bound = (|| {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .map_err(shown(&staging))?;
        let me = std::fs::metadata(&staging).map_err(shown(&staging))?.uid();
        clear_stale(path, me)?;
        let tmp = staging.join("s");
        let listener = UnixListener::bind(&tmp).map_err(shown(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(socket_mode))
            .map_err(shown(path))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(&tmp, None, Some(g))
                .map_err(|e| format!("{}: can not give it group {g}: {e}", path.display()))?;
        }
        std::fs::hard_link(&tmp, path).map_err(shown(path))?;
        let meta = std::fs::symlink_metadata(path).map_err(shown(path))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    })();
    let _ = std::fs::remove_file(staging.join("s"));
    let _ = std::fs::remove_dir(&staging);
    bound
}

/// An I/O error about `p`.
pub(crate) fn shown(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", p.display())
}

/// Creates the missing directories up to `dir` with `mode` (and `group`);
/// an existing one is the operator's and stays as it is, with a warning
/// when others may replace what is in it.
fn create_dirs(dir: &Path, mode: u32, group: Option<u32>) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d {
        match std::fs::symlink_metadata(p) {
            Ok(m) => {
                if p == dir && m.is_dir() && m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
                    warn!(
                        dir = %dir.display(),
                        mode = format!("{:o}", m.mode() & 0o7777),
                        "others may write in the control socket's directory and replace the socket"
                    );
                }
                break;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => missing.push(p),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
        d = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    for p in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(shown(p)(e)),
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(shown(p))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(p, None, Some(g)).map_err(shown(p))?;
        }
    }
    Ok(())
}

/// Removes a stale socket of user `me` at `path`; refuses anything else.
fn clear_stale(path: &Path, me: u32) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let left = "left in place; remove it or choose another control_socket";
    if !meta.file_type().is_socket() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.is_symlink() {
            "a symbolic link"
        } else if meta.is_file() {
            "a regular file"
        } else {
            "not a socket"
        };
        return Err(format!("{}: exists and is {what}; {left}", path.display()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "{}: another appliance is listening there",
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused && meta.uid() == me => {
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Err(format!(
            "{}: a socket of user {}, not ours; {left}",
            path.display(),
            meta.uid()
        )),
        Err(e) => Err(format!(
            "{}: a socket that can not be checked ({e}); {left}",
            path.display()
        )),
    }
}

impl ControlSocket {
    /// Serves clients from a thread of their own; complete requests come
    /// out of the receiver, for the main loop to answer.
    pub fn serve(&self) -> Result<Receiver<Request>, String> {
        let listener = self.listener.try_clone().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept(&listener, &tx))
            .map_err(|e| format!("can not start the control thread: {e}"))?;
        Ok(rx)
    }
}

impl Drop for ControlSocket {
    /// Removes the socket from the file system, if what is at its path is
    /// still this socket.
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A complete request of a client, waiting for its answer.
#[derive(Debug)]
pub struct Request {
    /// The request.
    pub body: ControlRequest,
    reply: SyncSender<Value>,
}

impl Request {
    /// Hands the answer to the client's thread (never waits for it).
    pub fn answer(self, v: Value) {
        let _ = self.reply.try_send(v);
    }
}

/// A client being served.
#[derive(Debug)]
struct Client {
    id: u64,
    since: Instant,
    /// Still sending its request (the ones that may lose their place).
    reading: bool,
    stream: UnixStream,
}

type Clients = Arc<Mutex<Vec<Client>>>;

fn accept(listener: &UnixListener, requests: &Sender<Request>) {
    let clients: Clients = Arc::default();
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: try again shortly, never spin.
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    warn!(suppressed, "control socket: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        if let Ok(mut list) = clients.lock() {
            if list.len() >= MAX_CLIENTS {
                let oldest_reading = list
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.reading)
                    .min_by_key(|(_, c)| c.since)
                    .map(|(i, _)| i);
                match oldest_reading {
                    Some(i) => {
                        let _ = list
                            .swap_remove(i)
                            .stream
                            .shutdown(std::net::Shutdown::Both);
                    }
                    None => {
                        // Every place is taking an answer; they are bounded
                        // in time, so this one can come back.
                        refuse(stream, "too many control clients at once; try again");
                        continue;
                    }
                }
            }
            list.push(Client {
                id,
                since: Instant::now(),
                reading: true,
                stream: handle,
            });
        }
        let (clients, requests) = (Arc::clone(&clients), requests.clone());
        let started = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                serve_client(stream, id, &clients, &requests);
                if let Ok(mut list) = clients.lock() {
                    list.retain(|c| c.id != id);
                }
            });
        if let Err(e) = started {
            if let Some(suppressed) = THREAD_ERRORS.allow() {
                warn!(
                    suppressed,
                    "control socket: can not start a client thread: {e}"
                );
            }
        }
    }
}

fn refuse(mut stream: UnixStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = writeln!(stream, "{}", json!({ "error": why }));
}

/// Why a request line could not be read.
enum LineError {
    TooLong,
    TimedOut,
    Closed,
}

/// Reads one line (without its newline) by `deadline`, at most
/// [`MAX_LINE`] octets.
fn read_line(stream: &mut UnixStream, deadline: Instant) -> Result<Vec<u8>, LineError> {
    let mut framer = LineFramer::default();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LineError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| LineError::Closed)?;
        let n = match stream.read(&mut chunk) {
            // A client that closes its side after the request may leave
            // the newline out.
            Ok(0) if !framer.line().is_empty() => return Ok(framer.line().to_vec()),
            Ok(0) => return Err(LineError::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => return Err(LineError::Closed),
        };
        match framer.push(&chunk[..n]) {
            Framed::More => {}
            Framed::Line => return Ok(framer.line().to_vec()),
            Framed::TooLong => return Err(LineError::TooLong),
        }
    }
}

/// A stream whose writes can be bounded in time.
pub(crate) trait TimedWrite: Write {
    /// Bounds each write to `timeout`.
    fn set_write_time(&self, timeout: Duration) -> std::io::Result<()>;
}

impl TimedWrite for UnixStream {
    fn set_write_time(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
}

impl TimedWrite for std::net::TcpStream {
    fn set_write_time(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }
}

/// Writes all of `bytes` by `deadline`, however slowly the peer reads;
/// false if it could not.
pub(crate) fn write_by<S: TimedWrite>(stream: &mut S, bytes: &[u8], deadline: Instant) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_time(left).is_err() {
            return false;
        }
        match stream.write(rest) {
            Ok(0) => return false,
            Ok(n) => rest = &rest[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn send_answer(stream: &mut UnixStream, v: &Value) {
    let mut bytes = v.to_string().into_bytes();
    bytes.push(b'\n');
    if !write_by(stream, &bytes, Instant::now() + WRITE_TIME) {
        if let Some(suppressed) = SLOW_CLIENTS.allow() {
            warn!(
                suppressed,
                "control socket: a client did not take its answer"
            );
        }
    }
}

fn serve_client(mut stream: UnixStream, id: u64, clients: &Clients, requests: &Sender<Request>) {
    let line = match read_line(&mut stream, Instant::now() + REQUEST_TIME) {
        Ok(line) => line,
        Err(LineError::TooLong) => {
            send_answer(
                &mut stream,
                &json!({"error": format!("request longer than {MAX_LINE} octets")}),
            );
            // Read what the client still sends (discarding it) for a moment,
            // so that closing does not reset the connection before it has
            // read the answer.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let until = Instant::now() + Duration::from_secs(1);
            let mut sink = [0u8; 4096];
            while Instant::now() < until {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                match stream.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            return;
        }
        Err(LineError::TimedOut) => {
            let secs = REQUEST_TIME.as_secs();
            send_answer(
                &mut stream,
                &json!({"error": format!("no complete request line within {secs} s")}),
            );
            return;
        }
        Err(LineError::Closed) => return,
    };
    if let Ok(mut list) = clients.lock() {
        if let Some(c) = list.iter_mut().find(|c| c.id == id) {
            c.reading = false;
        }
    }
    let answer = match ControlRequest::parse(&line) {
        Ok(body) => {
            let (reply, answered) = mpsc::sync_channel(1);
            if requests.send(Request { body, reply }).is_err() {
                json!({"error": "the appliance is stopping"})
            } else {
                answered.recv_timeout(ANSWER_TIME).unwrap_or_else(
                    |_| json!({"error": format!("no answer within {} s", ANSWER_TIME.as_secs())}),
                )
            }
        }
        Err(e) => json!({ "error": e }),
    };
    send_answer(&mut stream, &answer);
}

/// Sends one request to the appliance at `path` and returns its answer.
pub fn request(path: &Path, req: &ControlRequest) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is the appliance running? see --socket)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(ANSWER_TIME + WRITE_TIME))
        .map_err(|e| e.to_string())?;
    writeln!(s, "{}", req.to_json()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    serde_json::from_slice(&answer).map_err(|e| format!("answer is not JSON: {e}"))
}
