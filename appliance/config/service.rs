//! How the appliance runs as a service: its control socket and the
//! group that may use it, the user it becomes, its metrics endpoint.

use super::*;

/// The control socket's path: a file system path, whose mode and owner
/// say who may use it. An empty name is refused, and so is an abstract
/// socket (`@name`, or a leading NUL), which has no permissions at all.
pub(super) fn control_socket_path(ctx: &Ctx<'_>, s: &str) -> Result<PathBuf, ConfigError> {
    let field = "control_socket";
    if s.is_empty() {
        return Err(ctx.err(field, "is empty; give the socket's path"));
    }
    if s.starts_with('@') || s.starts_with('\0') {
        return Err(ctx.err(
            field,
            format!(
                "\"{}\" names an abstract socket, which anyone on the host may use; give a path in the file system",
                s.escape_default()
            ),
        ));
    }
    if s.contains('\0') {
        return Err(ctx.err(field, "contains a NUL character"));
    }
    // sun_path holds 108 octets with the terminating NUL.
    if s.len() > 107 {
        return Err(ctx.err(
            field,
            format!("is {} octets long; a socket path has at most 107", s.len()),
        ));
    }
    let path = PathBuf::from(s);
    if s.ends_with('/') || path.file_name().is_none() {
        return Err(ctx.err(field, format!("\"{s}\" names a directory, not a socket")));
    }
    Ok(path)
}

/// A group given by number or by name (looked up in `group_file`).
pub(super) fn group_id(v: &Value, group_file: &Path) -> Result<u32, String> {
    let name = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{n} is not a group id"))
        }
        Value::String(s) if !s.is_empty() => s,
        _ => return Err("must be a group name or a group id".into()),
    };
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string(group_file)
        .map_err(|e| format!("{}: {e}", group_file.display()))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| format!("no group \"{name}\" in {}", group_file.display()))
}

/// The uid and primary gid of `"user"` (a name, or a uid given as a number
/// or a string of digits), from `passwd_file`.
pub(super) fn user_ids(v: &Value, passwd_file: &Path) -> Result<(u32, u32), String> {
    let name = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => return Err("must be a user name or a uid".into()),
    };
    let text = std::fs::read_to_string(passwd_file)
        .map_err(|e| format!("{}: {e}", passwd_file.display()))?;
    let by_uid = name.bytes().all(|b| b.is_ascii_digit());
    let found = text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (n, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
        let matches = if by_uid { *uid == name } else { *n == name };
        matches.then(|| Some((uid.parse().ok()?, gid.parse().ok()?)))?
    });
    match found {
        Some((0, _)) => Err(format!(
            "\"{name}\" is root; name an unprivileged user (or leave \"user\" out)"
        )),
        Some(ids) => Ok(ids),
        None => Err(format!("no user \"{name}\" in {}", passwd_file.display())),
    }
}

/// The port the metrics endpoint (`crate::metrics`) listens on unless told
/// otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9474;

/// The configuration's `metrics` object: where the endpoint listens, or
/// none (the default: no endpoint).
///
/// ```json
/// "metrics": {"listen": "127.0.0.1:9474"}
/// ```
///
/// `listen` defaults to `127.0.0.1:9474`. An address that is not a
/// loopback address is refused unless `"allow_remote": true`: the counters
/// say what traffic crosses the appliance, and the endpoint has no
/// authentication (a firewall or a reverse proxy is then the operator's).
pub(crate) fn metrics_settings(
    ctx: &Ctx<'_>,
    raw: Option<RawMetrics>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(m) = raw else {
        return Ok(None);
    };
    let addr = match m.listen {
        None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT)),
        Some(text) => text.parse::<SocketAddr>().map_err(|_| {
            ctx.err(
                "metrics.listen",
                format!("\"{text}\" is not an address and port like \"127.0.0.1:9474\" or \"[::1]:9474\""),
            )
        })?,
    };
    let remote = m.allow_remote.is_some_and(|Flag(b)| b);
    if !addr.ip().is_loopback() && !remote {
        return Err(ctx.err(
            "metrics.listen",
            format!("{addr} is reachable from other hosts and the endpoint has no authentication; listen on a loopback address, or add \"allow_remote\": true"),
        ));
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod socket_group {
    //! `control_socket_group`: a gid, or a name looked up in the group
    //! file.

    use super::group_id;
    use serde_json::json;

    #[test]
    fn groups_by_number_and_by_name() {
        let file = std::env::temp_dir().join(format!("bitsgw-group-{}", std::process::id()));
        std::fs::write(
            &file,
            "root:x:0:\n# a comment line\nbroken\nbitsgw:x:4242:alice,bob\nops:x:notanumber:\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (json!(4242), Ok(4242)),
            (json!("4243"), Ok(4243)),
            (json!("bitsgw"), Ok(4242)),
            (json!("root"), Ok(0)),
        ];
        for (v, want) in cases {
            assert_eq!(group_id(&v, &file), want, "{v}");
        }
        for (v, problem) in [
            (json!("nobody-here"), "no group \"nobody-here\""),
            (json!("ops"), "no group \"ops\""),
            (json!(-1), "is not a group id"),
            (json!(1u64 << 33), "is not a group id"),
            (json!(""), "group name or a group id"),
            (json!(["bitsgw"]), "group name or a group id"),
        ] {
            let e = group_id(&v, &file).expect_err("refused");
            assert!(e.contains(problem), "{v}: {e}");
        }
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[cfg(test)]
mod run_as_user {
    //! `user`: a name or uid looked up in the passwd file, never root.

    use super::user_ids;
    use serde_json::json;

    #[test]
    fn users_by_name_and_by_uid_with_their_primary_group() {
        let file = std::env::temp_dir().join(format!("bitsgw-passwd-{}", std::process::id()));
        std::fs::write(
            &file,
            "root:x:0:0:root:/root:/bin/sh\nbroken\nbitsgw:x:998:997::/nonexistent:/usr/sbin/nologin\nodd:x:12:x::/:/bin/false\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for v in [json!("bitsgw"), json!(998), json!("998")] {
            assert_eq!(user_ids(&v, &file), Ok((998, 997)), "{v}");
        }
        for (v, problem) in [
            (json!("root"), "is root"),
            (json!(0), "is root"),
            (json!("nobody-here"), "no user \"nobody-here\""),
            (json!("odd"), "no user \"odd\""),
            (json!(""), "user name or a uid"),
            (json!(["bitsgw"]), "user name or a uid"),
        ] {
            let e = user_ids(&v, &file).expect_err("refused");
            assert!(e.contains(problem), "{v}: {e}");
        }
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[cfg(test)]
mod metrics_endpoint {
    use super::{metrics_settings, RawMetrics, DEFAULT_METRICS_PORT};
    use bitsgw_ipsec::config::{read_document, Ctx, Entries};
    use serde_json::Value;
    use std::net::SocketAddr;

    /// The `metrics` object alone.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        metrics: Option<RawMetrics>,
    }

    fn listen(json: &str) -> Result<Option<SocketAddr>, String> {
        let ctx = Ctx {
            file: "gw.json",
            entry: "appliance".into(),
        };
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        let doc: Doc =
            read_document("gw.json", &v, Entries::Whole("appliance")).map_err(|e| e.to_string())?;
        metrics_settings(&ctx, doc.metrics).map_err(|e| e.to_string())
    }

    #[test]
    fn configuration_is_off_by_default_and_on_loopback_unless_allowed() {
        assert_eq!(listen("{}"), Ok(None));
        assert_eq!(
            listen(r#"{"metrics": {}}"#),
            Ok(Some(SocketAddr::from((
                [127, 0, 0, 1],
                DEFAULT_METRICS_PORT
            ))))
        );
        assert_eq!(
            listen(r#"{"metrics": {"listen": "[::1]:9100"}}"#),
            Ok("[::1]:9100".parse().ok())
        );
        let remote = listen(r#"{"metrics": {"listen": "0.0.0.0:9474"}}"#).unwrap_err();
        assert!(
            remote.starts_with(
                "gw.json: appliance: field \"metrics.listen\": 0.0.0.0:9474 is reachable"
            ),
            "{remote}"
        );
        assert_eq!(
            listen(r#"{"metrics": {"listen": "0.0.0.0:9474", "allow_remote": true}}"#),
            Ok("0.0.0.0:9474".parse().ok())
        );
        let bad = listen(r#"{"metrics": {"listen": "localhost"}}"#).unwrap_err();
        assert!(
            bad.contains("\"metrics.listen\": \"localhost\" is not an address and port"),
            "{bad}"
        );
        let unknown = listen(r#"{"metrics": {"port": 1}}"#).unwrap_err();
        assert!(
            unknown.contains("metrics") && unknown.contains("port"),
            "{unknown}"
        );
        let kind = listen(r#"{"metrics": {"allow_remote": "yes"}}"#).unwrap_err();
        assert!(kind.contains("metrics.allow_remote"), "{kind}");
    }
}
