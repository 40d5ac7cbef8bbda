//! `bitsgw generate-docs DIR` (hidden; for packaging): the man pages and
//! shell completions, made from the command line's own definition so they
//! never drift from it.

use crate::control::shown;
use clap::CommandFactory;
use std::path::Path;

/// Writes `DIR/man/bitsgw.1` and a page per subcommand (`bitsgw-run.1`...),
/// and `DIR/completions/` for bash (`bitsgw`), zsh (`_bitsgw`) and fish
/// (`bitsgw.fish`); returns what it wrote, one path per line.
pub fn generate(dir: &Path) -> Result<String, String> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(shown(d))?;
    }
    clap_mangen::generate_to(crate::Cli::command(), &man).map_err(shown(&man))?;
    let mut cmd = crate::Cli::command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd, "bitsgw", &completions)
            .map_err(shown(&completions))?;
    }
    let mut written = Vec::new();
    for d in [&man, &completions] {
        for entry in std::fs::read_dir(d).map_err(shown(d))? {
            written.push(entry.map_err(shown(d))?.path().display().to_string());
        }
    }
    written.sort();
    Ok(written.join("\n") + "\n")
}
