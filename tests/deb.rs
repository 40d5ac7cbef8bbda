//! The Debian package (`make deb` builds it from a release build): built
//! here with cargo-deb from the binary the tests already built, it holds
//! the binary, the unit, the man pages, the completions, the examples and
//! policies; unpacked into a scratch root, its binary says its version and
//! validates every shipped example and policy; its maintainer scripts
//! create the system user and start or enable nothing; lintian finds no
//! error in it.
//!
//! Needs cargo-deb and lintian (`scripts/setup-test-deps.sh` installs
//! both); fails, naming what is missing, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `out` from target/debug/bitsgw (the binary
/// this test run built), with man pages and completions made by it.
fn build_package(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let have = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        have.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: scripts/setup-test-deps.sh installs it"
    );
    run(Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .arg("generate-docs")
        .arg(root.join("target/docs")));
    // The dev profile's binary is the one built for the tests (cargo-deb
    // strips it); `make deb` packages the release build.
    run(Command::new(&cargo)
        .current_dir(root)
        .args([
            "deb",
            "--no-build",
            "--strip",
            "--profile",
            "dev",
            "--fast",
            "--output",
        ])
        .arg(out));
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

#[test]
fn the_package_installs_the_service_docs_and_examples_and_lintian_finds_no_error() {
    let scratch = std::env::temp_dir().join(format!("bitsgw-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let cleanup = Scratch(scratch.clone());
    let deb = build_package(&scratch.join("out"));

    let contents = text(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    for file in [
        "./usr/bin/bitsgw",
        "./lib/systemd/system/bitsgw@.service",
        "./usr/share/man/man1/bitsgw.1.gz",
        "./usr/share/man/man1/bitsgw-run.1.gz",
        "./usr/share/man/man1/bitsgw-ctl.1.gz",
        "./usr/share/bash-completion/completions/bitsgw",
        "./usr/share/zsh/vendor-completions/_bitsgw",
        "./usr/share/fish/vendor_completions.d/bitsgw.fish",
        "./usr/share/doc/bitsgw/copyright",
        "./usr/share/doc/bitsgw/changelog.Debian.gz",
        "./usr/share/doc/bitsgw/README.md",
        "./usr/share/doc/bitsgw/examples/configs/gateway-a.json",
        "./usr/share/doc/bitsgw/policies/site-to-site-a.json",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(file)),
            "{file} not in the package:\n{contents}"
        );
    }
    // Nothing under /etc: a configuration is the administrator's.
    assert!(!contents.contains(" ./etc/"), "{contents}");

    // Unpacked into a scratch root: the binary runs and validates what the
    // package ships (the examples name their policies relative to
    // themselves, ../../policies).
    let root = scratch.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let bin = root.join("usr/bin/bitsgw");
    let version = text(&run(Command::new(&bin).arg("--version")));
    assert_eq!(
        version.trim(),
        format!("bitsgw {}", env!("CARGO_PKG_VERSION"))
    );
    let doc = root.join("usr/share/doc/bitsgw");
    let mut checked = 0;
    for dir in ["examples/configs", "policies"] {
        for entry in std::fs::read_dir(doc.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                run(Command::new(&bin).arg("check").arg(&path));
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} files checked");
    let man = run(Command::new("man")
        .arg("-l")
        .arg(root.join("usr/share/man/man1/bitsgw-run.1.gz"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80"));
    assert!(text(&man).contains("bitsgw run"), "{}", text(&man));

    // The maintainer scripts, run with dpkg's arguments against stand-ins
    // for the system tools they call (which record their arguments): the
    // user and group are created, nothing is enabled or started.
    let control = scratch.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let calls = maintainer_script_calls(&scratch, &control.join("postinst"), "configure");
    assert!(
        calls.iter().any(|c| c.starts_with("addgroup --system")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("adduser --system") && c.contains("--ingroup bitsgw")),
        "{calls:?}"
    );
    for c in &calls {
        for never in [
            "systemctl",
            "deb-systemd-helper",
            "deb-systemd-invoke",
            "invoke-rc.d",
        ] {
            assert!(!c.starts_with(never), "the install calls {c}");
        }
    }
    let calls = maintainer_script_calls(&scratch, &control.join("postrm"), "purge");
    assert!(
        calls.iter().all(|c| !c.starts_with("systemctl")),
        "{calls:?}"
    );

    let lintian = Path::new("/usr/bin/lintian");
    assert!(
        lintian.exists(),
        "lintian is missing: scripts/setup-test-deps.sh installs it"
    );
    let out = Command::new(lintian).arg(&deb).output().unwrap();
    let said = text(&out);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{said}");
    // lintian exits 2 on errors it found, 1 when it could not run.
    assert!(
        out.status.code() == Some(0),
        "lintian: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(cleanup);
}

/// Runs a maintainer script with `arg` and a PATH whose first folder has
/// stand-ins for every tool it may call (they log their command lines;
/// `getent` finds nothing, so the user is made), and every file path it
/// touches moved under the scratch folder; returns the logged calls.
fn maintainer_script_calls(scratch: &Path, script: &Path, arg: &str) -> Vec<String> {
    let bin = scratch.join("stand-ins");
    let log = scratch.join("calls.log");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "getent",
        "addgroup",
        "adduser",
        "groupadd",
        "useradd",
        "mkdir",
        "chown",
        "chmod",
        "rm",
        "rmdir",
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "invoke-rc.d",
    ] {
        let path = bin.join(tool);
        let code = if tool == "getent" { 2 } else { 0 };
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit {code}\n",
                log.display()
            ),
        )
        .unwrap();
        run(Command::new("chmod").arg("0755").arg(&path));
    }
    let path = format!("{}:/usr/bin:/bin", bin.display());
    run(Command::new("/bin/sh")
        .arg(script)
        .arg(arg)
        .env("PATH", path));
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Removes the scratch folder, also when the test fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
