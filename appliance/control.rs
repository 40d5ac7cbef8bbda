//! The control socket of a running appliance: one JSON request per line,
//! one JSON answer per line, over a Unix socket.
//!
//! Requests: `{"show": "all"}` (SAs, SPD with hits, counters, events),
//! `{"show": "bindings"}` (the `ha` role's binding cache, the `mn` role's
//! registration), `{"remove_sa": NAME}`, `{"reload": true}`, and in the
//! `mn` role `{"move": ATTACHMENT, "break": BOOL}` and `{"refresh": true}`.
//! Answers are the data, `{"ok": TEXT}` or `{"error": TEXT}`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Binds the control socket (replacing a stale one).
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another appliance is listening there",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

/// Answers the requests waiting on `listener` with `answer`.
pub fn serve_pending(listener: &UnixListener, answer: &mut dyn FnMut(&Value) -> Value) {
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => answer(&req),
            Err(e) => json!({"error": format!("request is not JSON: {e}")}),
        };
        let mut stream = stream;
        let _ = writeln!(stream, "{reply}");
    }
}

/// Sends one request to the appliance at `path` and returns its answer.
pub fn request(path: &Path, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is the appliance running? see --socket)",
            path.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    writeln!(s, "{req}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("answer is not JSON: {e}"))
}
