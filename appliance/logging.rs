//! How the human log format looks where it is written. Under systemd with
//! stderr going to the journal, journald stamps every line itself and
//! stores colour codes as unreadable bytes, so the lines carry neither;
//! colours are also off when stderr is no terminal, or when `NO_COLOR` is
//! set (no-color.org). `--log-format json` stays structured everywhere.

use std::os::unix::fs::MetadataExt;

/// What the human format's lines carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanStyle {
    /// A timestamp in front of each line.
    pub timestamps: bool,
    /// ANSI colours.
    pub colours: bool,
}

impl HumanStyle {
    /// The style for this process's stderr and environment.
    pub fn detect() -> HumanStyle {
        use std::io::IsTerminal as _;
        let stderr = std::fs::metadata("/proc/self/fd/2")
            .ok()
            .map(|m| (m.dev(), m.ino()));
        HumanStyle::for_stderr(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
            stderr,
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        )
    }

    /// The style given `JOURNAL_STREAM` (systemd sets it to the device and
    /// inode, `DEV:INO`, of the journal stream it connects stdout or
    /// stderr to; systemd.exec(5)), stderr's device and inode, whether
    /// stderr is a terminal, and whether `NO_COLOR` is set.
    pub fn for_stderr(
        journal_stream: Option<&str>,
        stderr: Option<(u64, u64)>,
        terminal: bool,
        no_color: bool,
    ) -> HumanStyle {
        // Only a stream that is stderr itself counts: a child of the
        // service whose stderr goes elsewhere inherits the variable too.
        let journal = journal_stream
            .and_then(|s| s.split_once(':'))
            .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
            .is_some_and(|id| Some(id) == stderr);
        HumanStyle {
            timestamps: !journal,
            colours: !journal && terminal && !no_color,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_journald_lines_have_neither_timestamps_nor_colours() {
        let s = HumanStyle::for_stderr(Some("8:1234"), Some((8, 1234)), true, false);
        assert_eq!(
            s,
            HumanStyle {
                timestamps: false,
                colours: false
            }
        );
    }

    #[test]
    fn a_journal_stream_that_is_not_stderr_changes_nothing() {
        let terminal = HumanStyle {
            timestamps: true,
            colours: true,
        };
        assert_eq!(
            HumanStyle::for_stderr(Some("8:1234"), Some((8, 99)), true, false),
            terminal
        );
        assert_eq!(
            HumanStyle::for_stderr(Some("garbage"), Some((8, 1234)), true, false),
            terminal
        );
        assert_eq!(
            HumanStyle::for_stderr(None, Some((8, 1234)), true, false),
            terminal
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        let file = HumanStyle::for_stderr(None, Some((8, 1)), false, false);
        assert_eq!((file.timestamps, file.colours), (true, false));
        let no_color = HumanStyle::for_stderr(None, Some((8, 1)), true, true);
        assert_eq!((no_color.timestamps, no_color.colours), (true, false));
    }
}
