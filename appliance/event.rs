//! `bitsgw replay --event SECONDS:COMMAND`: the text of a scheduled control
//! event, parsed without looking at the configuration (what the command
//! names is checked by the caller). Kept apart and free of I/O so the
//! fuzz target `replay_event` can build it on its own.

use std::time::Duration;

/// What an event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventCommand {
    /// `remove-sa NAME`.
    RemoveSa(String),
    /// `reload`: the policy file again.
    Reload,
    /// `move ATTACHMENT [--break]` (the `mn` role).
    Move {
        /// Where to, as `ctl move` takes it.
        to: String,
        /// Make-before-break (no `--break`).
        keep_old: bool,
    },
    /// `refresh` (the `mn` role).
    Refresh,
}

/// One `--event` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEvent {
    /// Time after the first frame of the captures.
    pub after: Duration,
    /// What to do then.
    pub command: EventCommand,
}

/// The longest time an event may be scheduled after the capture starts.
const MAX_SECONDS: f64 = 1e9;

/// Parses `SECONDS:COMMAND`; the error quotes the argument.
pub fn parse(arg: &str) -> Result<ReplayEvent, String> {
    let (t, cmd) = arg
        .split_once(':')
        .ok_or_else(|| format!("--event {arg}: expected SECONDS:COMMAND"))?;
    let secs: f64 = t
        .parse()
        .map_err(|_| format!("--event {arg}: \"{t}\" is not a number of seconds"))?;
    // Also refuses NaN, which compares false both ways.
    if !(0.0..MAX_SECONDS).contains(&secs) {
        return Err(format!("--event {arg}: time out of range"));
    }
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let command = match words.as_slice() {
        ["remove-sa", name] => EventCommand::RemoveSa(name.to_string()),
        ["reload"] => EventCommand::Reload,
        ["move", to, rest @ ..] if rest.is_empty() || rest == ["--break"] => EventCommand::Move {
            to: to.to_string(),
            keep_old: rest.is_empty(),
        },
        ["refresh"] => EventCommand::Refresh,
        _ => {
            return Err(format!(
                "--event {arg}: unknown command (known: remove-sa NAME, reload, move ATTACHMENT [--break], refresh)"
            ))
        }
    };
    Ok(ReplayEvent {
        after: Duration::from_secs_f64(secs),
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command() {
        assert_eq!(
            parse("1.5:remove-sa sa1"),
            Ok(ReplayEvent {
                after: Duration::from_millis(1500),
                command: EventCommand::RemoveSa("sa1".into())
            })
        );
        assert_eq!(
            parse("0:reload").map(|e| e.command),
            Ok(EventCommand::Reload)
        );
        assert_eq!(
            parse("3:move 2001:db8:2::100 --break").map(|e| e.command),
            Ok(EventCommand::Move {
                to: "2001:db8:2::100".into(),
                keep_old: false
            })
        );
        assert_eq!(
            parse("3: move home").map(|e| e.command),
            Ok(EventCommand::Move {
                to: "home".into(),
                keep_old: true
            })
        );
        assert_eq!(
            parse("30:refresh").map(|e| e.command),
            Ok(EventCommand::Refresh)
        );
    }

    #[test]
    fn refusals_quote_the_argument() {
        for (arg, want) in [
            ("reload", "expected SECONDS:COMMAND"),
            ("x:reload", "\"x\" is not a number of seconds"),
            ("NaN:reload", "time out of range"),
            ("-1:reload", "time out of range"),
            ("inf:reload", "time out of range"),
            ("1e9:reload", "time out of range"),
            ("1:move a --now", "unknown command"),
            ("1:remove-sa", "unknown command"),
            ("1:", "unknown command"),
        ] {
            let e = parse(arg).expect_err(arg);
            assert!(e.starts_with(&format!("--event {arg}:")), "{e}");
            assert!(e.contains(want), "{arg}: {e}");
        }
    }
}
