//! The control socket's protocol, without I/O: how a request line is
//! framed and what it asks. Kept apart so the fuzz target `control_request`
//! can build it on its own.
//!
//! A request is one line of at most [`MAX_LINE`] octets holding one JSON
//! object with exactly one command:
//! `{"show": "all" | "bindings" | "ike"}`, `{"remove_sa": NAME}`,
//! `{"reload": true}`, `{"move": ATTACHMENT, "break": BOOL}` (`break`
//! optional), `{"refresh": true}`, `{"initiate": PEER}` and
//! `{"terminate": PEER}`. Anything else is refused with an
//! error that says what is known.

use serde_json::{json, Map, Value};

/// Longest request line, newline included.
pub const MAX_LINE: usize = 64 * 1024;

/// The commands, as `unknown` errors list them.
const KNOWN: &str = "known: show, remove_sa, reload, move, refresh, initiate, terminate";

/// What `show` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowWhat {
    /// SAs, SPD with hits, counters, events.
    All,
    /// The binding cache (`ha`) or registration (`mn`).
    Bindings,
    /// The IKE peers with their IKE SAs and CHILD_SAs.
    Ike,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// `show`.
    Show(ShowWhat),
    /// `remove_sa NAME`.
    RemoveSa(String),
    /// `reload`.
    Reload,
    /// `move ATTACHMENT`, make-before-break unless `break_first`.
    Move {
        /// Where to, as `ctl move` takes it.
        to: String,
        /// Break-before-make.
        break_first: bool,
    },
    /// `refresh`.
    Refresh,
    /// `initiate PEER`: start an IKE SA with the peer now.
    Initiate(String),
    /// `terminate PEER`: delete the peer's IKE SAs (and so their
    /// CHILD_SAs); an initiating peer waits for `initiate`.
    Terminate(String),
}

impl ControlRequest {
    /// The request a line holds.
    pub fn parse(line: &[u8]) -> Result<ControlRequest, String> {
        if line.len() > MAX_LINE {
            return Err(format!("request longer than {MAX_LINE} octets"));
        }
        let v: Value =
            serde_json::from_slice(line).map_err(|e| format!("request is not JSON: {e}"))?;
        let Value::Object(obj) = v else {
            return Err(format!("a request is a JSON object ({KNOWN})"));
        };
        Self::from_object(&obj)
    }

    fn from_object(obj: &Map<String, Value>) -> Result<ControlRequest, String> {
        let only = |allowed: &[&str]| match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "unexpected field \"{}\" in this request",
                k.chars().take(40).collect::<String>()
            )),
            None => Ok(()),
        };
        let flag = |name: &str| match obj.get(name) {
            Some(Value::Bool(true)) => Ok(()),
            _ => Err(format!("\"{name}\" takes true")),
        };
        let text = |name: &str| {
            obj.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("\"{name}\" takes a string"))
        };
        if obj.contains_key("show") {
            only(&["show"])?;
            return match text("show")? {
                "all" => Ok(ControlRequest::Show(ShowWhat::All)),
                "bindings" => Ok(ControlRequest::Show(ShowWhat::Bindings)),
                "ike" => Ok(ControlRequest::Show(ShowWhat::Ike)),
                _ => Err("\"show\" takes \"all\", \"bindings\" or \"ike\"".into()),
            };
        }
        if obj.contains_key("remove_sa") {
            only(&["remove_sa"])?;
            return Ok(ControlRequest::RemoveSa(text("remove_sa")?.to_string()));
        }
        if obj.contains_key("reload") {
            only(&["reload"])?;
            flag("reload")?;
            return Ok(ControlRequest::Reload);
        }
        if obj.contains_key("move") {
            only(&["move", "break"])?;
            let break_first = match obj.get("break") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("\"break\" takes true or false".into()),
            };
            return Ok(ControlRequest::Move {
                to: text("move")?.to_string(),
                break_first,
            });
        }
        for (key, make) in [
            (
                "initiate",
                ControlRequest::Initiate as fn(String) -> ControlRequest,
            ),
            ("terminate", ControlRequest::Terminate),
        ] {
            if obj.contains_key(key) {
                only(&[key])?;
                return Ok(make(text(key)?.to_string()));
            }
        }
        if obj.contains_key("refresh") {
            only(&["refresh"])?;
            flag("refresh")?;
            return Ok(ControlRequest::Refresh);
        }
        Err(format!("unknown request ({KNOWN})"))
    }

    /// The request as `ctl` and `show` send it.
    pub fn to_json(&self) -> Value {
        match self {
            ControlRequest::Show(ShowWhat::All) => json!({"show": "all"}),
            ControlRequest::Show(ShowWhat::Bindings) => json!({"show": "bindings"}),
            ControlRequest::Show(ShowWhat::Ike) => json!({"show": "ike"}),
            ControlRequest::RemoveSa(name) => json!({ "remove_sa": name }),
            ControlRequest::Reload => json!({"reload": true}),
            ControlRequest::Move { to, break_first } => json!({"move": to, "break": break_first}),
            ControlRequest::Refresh => json!({"refresh": true}),
            ControlRequest::Initiate(peer) => json!({ "initiate": peer }),
            ControlRequest::Terminate(peer) => json!({ "terminate": peer }),
        }
    }
}

/// Collects a request line from what a client sends, in whatever pieces
/// it arrives, never holding more than [`MAX_LINE`] octets.
#[derive(Debug, Default)]
pub struct LineFramer {
    line: Vec<u8>,
}

/// What a piece of input completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    /// The line goes on.
    More,
    /// The line ended (its newline not kept); [`LineFramer::line`] has it.
    Line,
    /// The line is longer than [`MAX_LINE`]: the request is refused.
    TooLong,
}

impl LineFramer {
    /// Takes the next piece of input. After `Line` or `TooLong`, the rest
    /// of the piece is not looked at: one request per connection.
    pub fn push(&mut self, piece: &[u8]) -> Framed {
        let end = piece.iter().position(|b| *b == b'\n');
        let take = end.unwrap_or(piece.len());
        if self.line.len() + take + usize::from(end.is_some()) > MAX_LINE {
            return Framed::TooLong;
        }
        self.line.extend_from_slice(&piece[..take]);
        if end.is_some() {
            Framed::Line
        } else {
            Framed::More
        }
    }

    /// The line so far.
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_ctl_and_show_send_is_understood() {
        for r in [
            ControlRequest::Show(ShowWhat::All),
            ControlRequest::Show(ShowWhat::Bindings),
            ControlRequest::Show(ShowWhat::Ike),
            ControlRequest::RemoveSa("sa1".into()),
            ControlRequest::Reload,
            ControlRequest::Move {
                to: "2001:db8:2::100".into(),
                break_first: true,
            },
            ControlRequest::Refresh,
            ControlRequest::Initiate("site-b".into()),
            ControlRequest::Terminate("site-b".into()),
        ] {
            let line = r.to_json().to_string();
            assert_eq!(ControlRequest::parse(line.as_bytes()), Ok(r));
        }
        assert_eq!(
            ControlRequest::parse(br#"{"move": "home"}"#),
            Ok(ControlRequest::Move {
                to: "home".into(),
                break_first: false
            })
        );
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        for (line, want) in [
            (
                &br#"{"show": "all", "remove_sa": "x"}"#[..],
                "unexpected field \"remove_sa\"",
            ),
            (br#"{"show": 5}"#, "\"show\" takes a string"),
            (br#"{"show": "keys"}"#, "\"all\", \"bindings\" or \"ike\""),
            (br#"{"reload": false}"#, "\"reload\" takes true"),
            (
                br#"{"move": "home", "break": "yes"}"#,
                "\"break\" takes true or false",
            ),
            (br#"{"remove_sa": ["a"]}"#, "\"remove_sa\" takes a string"),
            (br#"{}"#, "unknown request (known:"),
            (br#"["show"]"#, "a request is a JSON object"),
            (b"{\"show\": \"all\"", "request is not JSON"),
        ] {
            let e = ControlRequest::parse(line).expect_err(&String::from_utf8_lossy(line));
            assert!(e.contains(want), "{e}");
        }
        let long = vec![b' '; MAX_LINE + 1];
        assert!(ControlRequest::parse(&long)
            .unwrap_err()
            .contains("longer than"));
    }

    #[test]
    fn lines_are_framed_in_any_pieces_and_bounded() {
        let mut f = LineFramer::default();
        assert_eq!(f.push(b"{\"reload\""), Framed::More);
        assert_eq!(f.push(b": true}\n{\"show\": \"all\"}\n"), Framed::Line);
        assert_eq!(f.line(), br#"{"reload": true}"#);
        let mut f = LineFramer::default();
        let piece = vec![b'x'; 4096];
        let mut pushed = 0;
        let outcome = loop {
            match f.push(&piece) {
                Framed::More => pushed += piece.len(),
                other => break other,
            }
        };
        assert_eq!(outcome, Framed::TooLong);
        assert!(pushed <= MAX_LINE && f.line().len() <= MAX_LINE);
        // Exactly the limit, newline included, is a line.
        let mut f = LineFramer::default();
        let mut at_limit = vec![b'x'; MAX_LINE - 1];
        at_limit.push(b'\n');
        assert_eq!(f.push(&at_limit), Framed::Line);
    }
}
