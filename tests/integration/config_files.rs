//! The config file: every YAML in the repo passes `check-config`; errors name line and key.

use std::path::{Path, PathBuf};
use std::process::Command;

use wardgate::config::{self, ConfigError};

/// Runs `wardgate check-config --config <file>`.
fn check_config(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .args(["check-config", "--config"])
        .arg(file)
        .output()
        .unwrap()
}

fn repo_yaml_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    dirs.push(path);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn check_config_passes_on_every_yaml_file_in_the_repo() {
    let files = repo_yaml_files();
    assert!(
        files.iter().any(|f| f.ends_with("gateway.yaml")),
        "{files:?}"
    );
    for file in files {
        let output = check_config(&file);
        assert!(
            output.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn check_config_fails_with_a_non_zero_status_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    // Port 1 would need root to bind; check-config must not even try.
    std::fs::write(
        &file,
        crate::harness::simple_config("http://127.0.0.1:1").replace("127.0.0.1:0", "127.0.0.1:1")
            + "surprise: 1\n",
    )
    .unwrap();
    let output = check_config(&file);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yaml:17:1: surprise: unknown field `surprise`"),
        "{stderr}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, crate::harness::simple_config("http://127.0.0.1:1")).unwrap();
    let output = check_config(&good);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: tls.dev_self_signed"), "{stderr}");
    assert!(stderr.contains("auth: none"), "{stderr}");
    assert!(
        !good.with_file_name("gateway.crt").exists(),
        "check-config wrote a certificate"
    );
}

fn error_for(text: &str) -> ConfigError {
    config::parse(Path::new("gw.yaml"), text)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
}

fn base() -> String {
    crate::harness::simple_config("http://127.0.0.1:9000")
}

/// Each case: the config text, the line the error must name, and the key it must name.
#[test]
fn errors_name_the_file_line_column_and_key() {
    let cases: Vec<(String, u32, &str)> = vec![
        (base().replace("version: 1", "version: 2"), 1, "version"),
        (
            base().replace(
                "  cert: gateway.crt",
                "  cert: gateway.crt\n  certificate: x",
            ),
            7,
            "tls.certificate",
        ),
        (
            base().replace(
                "log:\n  requests: false",
                "log:\n  requests: false\n  colour: true",
            ),
            11,
            "log.colour",
        ),
        (
            base().replace("upstream: backend", "upstream: nowhere"),
            16,
            "routes[0].upstream",
        ),
        (
            base().replace("path: /**", "path: /a/**/b"),
            16,
            "routes[0].path",
        ),
        (
            base().replace("\"http://127.0.0.1:9000\"", "\"ftp://127.0.0.1:9000\""),
            14,
            "upstreams.backend.url",
        ),
        (
            base() + "server:\n  header_read_timeout: 15\n",
            18,
            "server.header_read_timeout",
        ),
        (
            base() + "server:\n  max_header_size: 16kb\n",
            18,
            "server.max_header_size",
        ),
        (
            base() + "server:\n  max_header_size: 1KiB\n",
            18,
            "server.max_header_size",
        ),
        (
            base() + "server:\n  max_request_line: 32KiB\n",
            18,
            "server.max_request_line",
        ),
        (
            base().replace("https: \"127.0.0.1:0\"", "https: \"localhost:99999\""),
            3,
            "listen.https",
        ),
        (
            base().replace("auth: none", "auth: maybe"),
            16,
            "routes[0].auth",
        ),
        (
            base()
                + "  - { path: \"/{other}\", upstream: backend, auth: none }\n  - { path: /*, upstream: backend, auth: none }\n",
            18,
            "routes[2].path",
        ),
    ];
    for (text, line, key) in cases {
        let error = error_for(&text);
        let message = error.to_string();
        match &error {
            ConfigError::Invalid {
                line: got,
                column,
                key: got_key,
                ..
            } => {
                assert_eq!(*got, line, "wrong line for {key}: {message}\n{text}");
                assert!(*column > 0, "{message}");
                assert_eq!(got_key, key, "{message}");
            }
            other => panic!("not located: {other}"),
        }
        assert!(message.starts_with("gw.yaml:"), "{message}");
        assert!(message.contains(key), "key {key} not named: {message}");
    }
}

#[test]
fn weak_settings_are_warned_about() {
    let text = base()
        + "forwarding:\n  trusted_proxies: [\"0.0.0.0/0\"]\n"
        + "demo_backend:\n  listen: \"127.0.0.1:9001\"\n";
    let loaded = config::parse(
        Path::new("gw.yaml"),
        &text.replace(
            "127.0.0.1:0\"\ntls",
            "0.0.0.0:9443\"\n  admin_insecure_plaintext: true\ntls",
        ),
    )
    .unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    for expected in [
        "dev_self_signed",
        "0.0.0.0/0",
        "DEMO",
        "plain http://",
        "auth: none",
        "not loopback",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "no warning about {expected}: {warnings:?}"
        );
    }
    let public_demo = base() + "demo_backend:\n  listen: \"0.0.0.0:9001\"\n";
    assert!(
        error_for(&public_demo)
            .to_string()
            .contains("demo_backend.listen")
    );
}

#[test]
fn check_config_refuses_a_missing_master_key_outside_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let config = crate::harness::simple_config("http://127.0.0.1:1")
        .replace("store:\n  dev_generate_key: true\n", "");
    std::fs::write(&file, config).unwrap();
    let output = check_config(&file);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master.key"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "check-config wrote the data directory"
    );
}

#[test]
fn second_factor_lists_must_hold_a_real_factor() {
    let error = error_for(&(base() + "auth:\n  mfa:\n    roles:\n      desk: [recovery_code]\n"));
    let text = error.to_string();
    assert!(text.contains("auth.mfa.roles.desk"), "{text}");
    assert!(text.contains("recovery codes alone"), "{text}");
    let passkeys = base() + "auth:\n  mfa:\n    methods: [webauthn]\n";
    assert!(
        error_for(&passkeys)
            .to_string()
            .contains("auth.mfa.methods")
    );
    let unknown = error_for(&(base() + "auth:\n  mfa:\n    methods: [sms]\n"));
    assert!(
        unknown.to_string().contains("auth.mfa.methods"),
        "{unknown}"
    );
}

/// `check-config` and `run` compile the settings with the same function: a setting that would
/// stop the gateway at start stops the check too, with the same message.
#[tokio::test]
async fn check_config_refuses_what_run_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    let simple = |extra: &str| crate::harness::simple_config("http://127.0.0.1:1") + extra;
    for (config, message) in [
        (
            simple("auth:\n  lockout: { max_failures: 0 }\n"),
            "auth.lockout.max_failures: must be between 1 and 100",
        ),
        (
            simple("auth:\n  totp: { period: 5s }\n"),
            "auth.totp: invalid TOTP setting: period",
        ),
        (
            simple("auth:\n  webauthn: { rp_id: gw.example, origin: \"https://other.example\" }\n"),
            "auth.webauthn.",
        ),
    ] {
        std::fs::write(&file, &config).unwrap();
        let output = check_config(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config}: {stderr}");
        assert!(stderr.contains(message), "{config}: {stderr}");
        // `run`: the file is loaded (some settings are refused there, with their line), then
        // the settings compiled before anything is bound.
        let refused = match config::load(&file) {
            Err(error) => error.to_string(),
            Ok(loaded) => match wardgate::server::Bound::bind(&loaded).await {
                Err(error) => error.to_string(),
                Ok(_) => panic!("{config}: the gateway started"),
            },
        };
        assert!(refused.contains(message), "{config}: {refused}");
    }
}

/// The access policy's refusals: each names its key (line numbers are checked above).
#[test]
fn the_policy_refuses_operators_with_data_and_routes_without_a_patient() {
    let policy =
        "policy:\n  categories: { labs: {} }\n  roles:\n    physician: { care_team: [labs] }\n";
    let route = |extra: &str| {
        crate::harness::config_with(
            "  ehr: { url: \"http://127.0.0.1:9000\" }",
            &format!("  - {{ path: \"/p/{{patient}}/**\", upstream: ehr, auth: session{extra} }}"),
            policy,
        )
    };
    let key_of = |text: String| match error_for(&text) {
        ConfigError::Invalid { key, message, .. } => format!("{key}: {message}"),
        other => panic!("{other}"),
    };
    let cases = [
        (
            route(", data: labs, patient: \"{patient}\"").replace(
                "physician: { care_team: [labs] }",
                "ops: { operator: true, care_team: [labs] }",
            ),
            "policy.roles.ops: an operator role",
        ),
        (
            route(", data: labs, patient: \"{patient}\"").replace(
                "physician: { care_team: [labs] }",
                "ops: { operator: true, approve: true }",
            ),
            "policy.roles.ops.approve",
        ),
        (
            route(", data: labs, patient: \"{patient}\"").replace("[labs] }", "[lab] }"),
            "policy.roles.physician.care_team: `lab` is not",
        ),
        (
            route(", data: labs"),
            "routes[0].patient: a route with `data`",
        ),
        (
            route(", data: labs, patient: \"{id}\""),
            "routes[0].patient: names no `{parameter}`",
        ),
        (
            route(", data: imaging, patient: \"{patient}\""),
            "routes[0].data: `imaging`",
        ),
        (
            route(", patient: \"{patient}\""),
            "routes[0].patient: a patient source needs `data`",
        ),
        (
            route(", patient_data: true"),
            "routes[0].data: a route that carries patient data",
        ),
        (
            route(", data: labs, patient: \"{patient}\"").replace(policy, ""),
            "routes[0].data: needs a `policy:` section",
        ),
        (
            route(", data: labs, patient: \"{patient}\"").replace("auth: session", "auth: none"),
            "routes[0].auth: a route with `data` needs `auth: session`",
        ),
        (
            route(", data: labs, patient: \"{patient}\"").replace(
                "physician: { care_team: [labs] }\n",
                "physician: { care_team: [labs] }\n  break_glass: { roles: [physician], reasons: [x], alert: { upstream: pager, path: /a } }\n",
            ),
            "policy.break_glass.alert.upstream: no upstream named `pager`",
        ),
    ];
    for (text, expected) in cases {
        let found = key_of(text);
        assert!(found.starts_with(expected), "{found}\nexpected {expected}");
    }
    // FHIR routes: the map under the policy, a base ending in `/**`, a person, nothing else.
    let fhir_policy =
        format!("{policy}  fhir: {{ resources: {{ Observation: {{ data: labs }} }} }}\n");
    let fhir = |route: &str, policy: &str| {
        crate::harness::config_with(
            "  ehr: { url: \"http://127.0.0.1:9000\" }",
            &format!("  - {{ {route} }}"),
            policy,
        )
    };
    let good = "path: /fhir/**, upstream: ehr, auth: session, fhir: true";
    assert!(config::parse(Path::new("gw.yaml"), &fhir(good, &fhir_policy)).is_ok());
    for (text, expected) in [
        (fhir(good, policy), "routes[0].fhir: needs `policy.fhir`"),
        (fhir(good, ""), "routes[0].fhir: needs `policy.fhir`"),
        (
            fhir(&good.replace("/fhir/**", "/fhir"), &fhir_policy),
            "routes[0].path: a FHIR route's path",
        ),
        (
            fhir(&good.replace("session", "none"), &fhir_policy),
            "routes[0].auth: a FHIR route needs `auth: session`",
        ),
        (
            fhir(&format!("{good}, data: labs"), &fhir_policy),
            "routes[0].fhir: a FHIR route says its patient",
        ),
        (
            fhir(good, &fhir_policy.replace("data: labs", "data: lab")),
            "policy.fhir.resources.Observation.data: `lab` is not",
        ),
    ] {
        let found = key_of(text);
        assert!(found.starts_with(expected), "{found}\nexpected {expected}");
    }
    // Without a policy, protected routes are warned about.
    let open = route("").replace(policy, "");
    let loaded = config::parse(Path::new("gw.yaml"), &open).unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.0.contains("no `policy:` section")),
        "{:?}",
        loaded.warnings
    );
}

/// The audit section's refusals, and the warnings about a missing trail and a generated key.
#[test]
fn the_audit_trail_keeps_its_keys_outside_and_checks_its_rules() {
    let with = |audit: &str| format!("{}{audit}", base());
    let refused = |audit: &str| match error_for(&with(audit)) {
        ConfigError::Invalid { key, message, .. } => format!("{key}: {message}"),
        other => panic!("{other}"),
    };
    for (audit, expected) in [
        (
            "audit: { checkpoint_every: 0 }\n",
            "audit.checkpoint_every: at least 1",
        ),
        (
            "audit: { checkpoint_interval: 0s }\n",
            "audit.checkpoint_interval: at least 1s",
        ),
        (
            "audit: { segment_size: 1KiB }\n",
            "audit.segment_size: at least 4KiB",
        ),
        (
            "audit: { path: audit/, key_file: audit/audit.key }\n",
            "audit.key_file: the keys live outside `audit.path`",
        ),
        (
            "audit: { path: audit/, signing_key: audit/sign.key }\n",
            "audit.key_file: the keys live outside `audit.path`",
        ),
        (
            "audit: { retention: 23h }\n",
            "audit.retention: at least 1d",
        ),
        (
            "audit: { checkpoint_webhook: { upstream: nowhere, path: /hooks } }\n",
            "audit.checkpoint_webhook.upstream: no upstream named `nowhere`",
        ),
        (
            "audit: { checkpoint_syslog: \"tcp://127.0.0.1:514\" }\n",
            "audit.checkpoint_syslog: `tcp://127.0.0.1:514`: udp://IP:PORT or unix:",
        ),
        (
            "audit: { checkpoint_syslog: \"udp://localhost:514\" }\n",
            "audit.checkpoint_syslog: `udp://localhost:514`: udp://IP:PORT",
        ),
    ] {
        let found = refused(audit);
        assert!(found.starts_with(expected), "{found}\nexpected {expected}");
    }
    assert!(matches!(
        error_for(&with("audit: { paths: audit/ }\n")),
        ConfigError::Invalid { .. }
    ));
    let warned = |text: &str, needle: &str| {
        let loaded = config::parse(Path::new("gw.yaml"), text).unwrap();
        loaded.warnings.iter().any(|w| w.0.contains(needle))
    };
    assert!(warned(&base(), "no `audit:` section"));
    assert!(!warned(&with("audit: {}\n"), "no `audit:` section"));
    assert!(warned(
        &with("audit: { dev_generate_key: true }\n"),
        "audit.dev_generate_key is on"
    ));
    let short = "audit.retention is shorter than six years";
    assert!(warned(&with("audit: { retention: 2189d }\n"), short));
    assert!(!warned(&with("audit: { retention: 2190d }\n"), short));
    assert!(
        !warned(&with("audit: {}\n"), short),
        "no retention keeps everything"
    );
}
