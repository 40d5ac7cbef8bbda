//! Policy files from disk: the IPsec crate parses text and never touches
//! the file system (it is sans-IO), so reading the file and looking at its
//! permissions happen here.

use super::*;

/// Reads and parses a policy file. A file that can not be read is an error
/// of its entry `file`; a file that holds keys and that every user of the
/// machine may read gets a warning.
pub fn load_policy_file(path: &Path) -> Result<PolicySet, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        entry: "file".into(),
        field: String::new(),
        problem: format!("can not be read: {e}"),
    })?;
    let mut set = parse_policy(&text, &file)?;
    if let Some(w) = readable_by_others(path, &set) {
        set.warnings.push(w);
    }
    Ok(set)
}

/// A warning when a policy file that holds keys can be read by any user
/// of the machine.
fn readable_by_others(path: &Path, set: &PolicySet) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    let has_keys = set
        .sas
        .iter()
        .any(|sa| !sa.enc_key.is_empty() || !sa.auth_key.is_empty());
    (has_keys && mode & 0o004 != 0).then(|| {
        format!(
            "{}: the file holds keys and is readable by every user of this machine (mode {:o}); chmod o-r it",
            set.file,
            mode & 0o777
        )
    })
}
