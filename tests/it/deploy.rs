//! The deployment files (`deploy/`): the systemd unit passes `systemd-analyze verify` with the
//! binary where the unit expects it, keeps its hardening (exposure at most 2.0 by
//! `systemd-analyze security`), reloads with SIGHUP, and hands the tokens over as a
//! credential the daemon accepts as private.

use std::path::PathBuf;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/invariantd.service"),
    )
    .unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_stays_hardened() {
    let text = unit();
    for line in [
        "ExecStart=/usr/local/bin/invariantd run --config /etc/invariantd/invariantd.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LoadCredential=tokens:/etc/invariantd/tokens",
        "StateDirectory=invariantd",
    ] {
        assert!(text.lines().any(|l| l == line), "missing: {line}");
    }
    // `verify` checks that ExecStart is executable: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invariantd.service");
    std::fs::write(
        &path,
        text.replace(
            "/usr/local/bin/invariantd",
            env!("CARGO_BIN_EXE_invariantd"),
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = run(&["verify"]);
    assert!(ok && said.trim().is_empty(), "{said}");
    let (ok, said) = run(&["security", "--offline=true", "--threshold=20"]);
    assert!(ok, "exposure above 2.0:\n{said}");
}

/// The image is built in CI nowhere (no registry to pull from): its file is checked for what
/// matters — a release build from the lock file in a stage of its own, and a final stage with
/// only the binary, a state directory the daemon's user owns, and that user not root.
#[test]
fn the_containerfile_builds_a_small_non_root_image() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Containerfile"))
            .unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(
        stages[0].contains("cargo build --release --locked"),
        "{}",
        stages[0]
    );
    let runtime = stages[1];
    assert!(
        !runtime.contains("RUN "),
        "the runtime stage has no shell to run: {runtime}"
    );
    assert!(
        runtime
            .contains("COPY --from=build /src/target/release/invariantd /usr/local/bin/invariantd")
    );
    assert!(runtime.contains("--chown=65532:65532"), "{runtime}");
    let user = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    let ignored =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .unwrap();
    assert!(
        ignored.lines().any(|l| l == "target/"),
        "the build context leaves target/ out"
    );
}
