//! The deployment files (`deploy/`): the systemd unit passes `systemd-analyze verify` with the
//! binary where the unit expects it, keeps its hardening (exposure at most 2.0 by
//! `systemd-analyze security`), reloads with SIGHUP, and hands the tokens over as a
//! credential the daemon accepts as private. The Kubernetes manifests validate against the
//! Kubernetes schemas (`kubernetes-validate`), keep their promises (replicas, probes, a
//! non-root read-only container, the tokens at 0400), stay in step with the example rules and
//! `alerts/` (checked by promtool), and their config validates.

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

fn kubernetes(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(file)
}

/// Every document of a manifest.
fn manifests(file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(kubernetes(file)).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn of_kind(file: &str, kind: &str) -> serde_json::Value {
    manifests(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"))
}

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas_and_keep_their_promises() {
    let files = [
        "config.yaml",
        "rules.yaml",
        "secret.yaml",
        "deployment.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ];
    let kustomization = std::fs::read_to_string(kubernetes("kustomization.yaml")).unwrap();
    for f in files {
        assert!(
            kustomization.contains(&format!("  - {f}\n")),
            "{f} not in the kustomization"
        );
    }
    // The core kinds against Kubernetes' own schemas (the Prometheus Operator's two kinds have
    // none there: they are checked below, and their rules by promtool).
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(files.map(kubernetes))
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate; .ci/run does)");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !said.contains("ERROR"), "{said}");

    let deployment = of_kind("deployment.yaml", "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let main = &pod["containers"][0];
    assert_eq!(main["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(main["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(main["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(main["resources"]["requests"]["memory"].is_string());
    // The tokens: a Secret file of mode 0400, copied (still 0400, owned by the daemon's user)
    // to where the config reads it.
    let volumes = pod["volumes"].as_array().unwrap();
    let secret = volumes.iter().find(|v| v["secret"].is_object()).unwrap();
    assert_eq!(secret["secret"]["secretName"], "invariantd-tokens");
    assert_eq!(secret["secret"]["defaultMode"], 0o400);
    let init = pod["initContainers"][0]["command"].to_string();
    assert!(
        init.contains(r#""install","-m","0400","/secret/tokens","/run/invariantd/tokens""#),
        "{init}"
    );
    let config = of_kind("config.yaml", "ConfigMap")["data"]["invariantd.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(config.contains("tokens_file: /run/invariantd/tokens"));
    let pdb = of_kind("deployment.yaml", "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"], spec["selector"]);
    let service = of_kind("deployment.yaml", "Service");
    let monitor = of_kind("servicemonitor.yaml", "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port)
    );

    // The rules ConfigMap is the example shop's rules; the PrometheusRule is alerts/.
    let rules = of_kind("rules.yaml", "ConfigMap");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/shop/rules");
    let mut shipped: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let keys: Vec<&String> = rules["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        shipped.iter().collect::<Vec<_>>(),
        "deploy/kubernetes/rules.yaml is out of step"
    );
    for name in &shipped {
        assert_eq!(
            rules["data"][name].as_str().unwrap(),
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "deploy/kubernetes/rules.yaml: {name} is out of step with examples/shop/rules/"
        );
    }
    let alerts_text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("alerts/invariantd.rules.yml"),
    )
    .unwrap();
    let alerts: serde_json::Value = serde_saphyr::from_str(&alerts_text).unwrap();
    let rule = of_kind("prometheusrule.yaml", "PrometheusRule");
    assert_eq!(
        rule["spec"], alerts,
        "deploy/kubernetes/prometheusrule.yaml is out of step with alerts/"
    );
    let tmp = tempfile::tempdir().unwrap();
    let extracted = tmp.path().join("rules.yml");
    std::fs::write(&extracted, serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    let promtool = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&extracted)
        .output()
        .unwrap();
    assert!(
        promtool.status.success(),
        "{}",
        String::from_utf8_lossy(&promtool.stdout)
    );

    // The config validates as shipped, with the rules beside it (and a tokens file where the
    // init container puts it).
    std::fs::create_dir(tmp.path().join("rules")).unwrap();
    for name in &shipped {
        std::fs::copy(dir.join(name), tmp.path().join("rules").join(name)).unwrap();
    }
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops:admin:0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    std::fs::write(
        tmp.path().join("invariantd.yaml"),
        config.replace("/run/invariantd/tokens", &tokens.display().to_string()),
    )
    .unwrap();
    let mut validate = Command::new(env!("CARGO_BIN_EXE_invariantd"));
    validate
        .arg("validate")
        .current_dir(tmp.path())
        .env_remove("INVARIANTD_CONFIG");
    for (var, url) in [
        (
            "STATE_DATABASE_URL",
            "postgres://invariantd@state-db/invariantd",
        ),
        ("ORDERS_DATABASE_URL", "postgres://checker@orders-db/orders"),
        (
            "PAYMENTS_DATABASE_URL",
            "postgres://checker@payments-db/payments",
        ),
        (
            "INVENTORY_DATABASE_URL",
            "mariadb://checker@inventory-db/inventory",
        ),
        (
            "SHIPPING_DATABASE_URL",
            "postgres://checker@shipping-db/shipping",
        ),
    ] {
        validate.env(var, url);
    }
    let out = validate.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
