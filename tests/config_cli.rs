//! `sluice check`, `${VAR}` expansion and `SLUICE__` overrides, through the
//! real binary where the user would use it.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::HashMap;
use std::io::Write;
use std::process::Command;

use sluice::config::load_from_str;

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(text)
}

/// A tiny self-deleting temp file, to avoid a dependency for one test file.
mod tempfile_path {
    use std::path::PathBuf;

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn with(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!("sluice-test-{}.toml", fastrand::u64(..)));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn sluice(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).env_remove("SLUICE_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_configs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (ok, out, err) = sluice(
        &["check", "--config", &format!("{root}/config/sluice.toml")],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("mock-primary") && out.contains("gpt-4o"),
        "{out}"
    );
    assert!(
        !out.contains("sk-sluice-demo-key"),
        "check must never print a key"
    );

    let env = [
        ("OPENAI_API_KEY", "sk-x"),
        ("ANTHROPIC_API_KEY", "sk-x"),
        ("AZURE_OPENAI_KEY", "a"),
        ("AZURE_OPENAI_KEY_SWEDEN", "b"),
        ("AZURE_EASTUS_KEY", "c"),
        ("AZURE_WESTUS_KEY", "d"),
        ("AZURE_SWEDEN_KEY", "e"),
        ("SLUICE_APP_KEY", "sk-app-key-123"),
        ("ASSISTANT_TEAM_KEY", "sk-assistant-123"),
        (
            "SEARCH_TEAM_KEY_SHA256",
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        ),
        (
            "NOTEBOOK_KEY_SHA256",
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        ),
        ("SEARCH_SERVICE_KEY", "sk-search-service-1"),
        ("REDIS_URL", "redis://:hunter2@127.0.0.1:6379"),
        ("SLUICE_ADMIN_TOKEN", "an-admin-token-long-enough"),
        ("POSTGRES_PASSWORD", "hunter2"),
        ("DATABASE_HOST", "postgres:5432"),
        ("DATABASE_NAME", "sluice"),
        ("DATABASE_USER", "sluice"),
        ("DATABASE_PASSWORD", "hunter2"),
        ("REDIS_HOST", "redis:6379"),
        ("REDIS_PASSWORD", "hunter2"),
    ];
    for example in [
        "config/examples/openai.toml",
        "config/examples/azure.toml",
        "config/examples/anthropic.toml",
        "config/examples/multi-region.toml",
        "config/examples/limits.toml",
        "config/examples/resilience.toml",
        "config/examples/cache.toml",
        "config/examples/policies.toml",
        "config/examples/compose.toml",
        "deploy/kubernetes/base/sluice.toml",
    ] {
        let path = format!("{root}/{example}");
        let (ok, out, err) = sluice(&["check", "--config", &path], &env);
        assert!(ok, "{example}: {err}");
        for secret in ["sk-app-key-123", "sk-x", "hunter2", "an-admin-token"] {
            assert!(!out.contains(secret), "{example} printed a secret: {out}");
        }
    }
    let limits = format!("{root}/config/examples/limits.toml");
    let (_, out, _) = sluice(&["check", "--config", &limits], &env);
    assert!(
        out.contains("search-service") && out.contains("tpm=5000000"),
        "{out}"
    );
    assert!(
        out.contains("org research") && out.contains("redis redis://:***@127.0.0.1:6379"),
        "{out}"
    );
}

#[test]
fn check_summarises_the_stores_without_their_passwords() {
    let config = write_config(
        r#"
        [cache]
        enabled = true
        scope = "org"
        [cache.semantic]
        enabled = true
        embedding_model = "e"
        store = "postgres"
        postgres_url = "postgres://sluice:index-secret@db:5432/cache"
        [usage]
        store = "postgres://sluice:ledger-secret@db:5432/usage"
        [batch]
        store = "postgres://sluice:jobs-secret@db:5432/jobs"
        files_dir = "/shared/files"
        [admin]
        keys_store = "postgres://sluice:keys-secret@db:5432/keys"
        [[deployments]]
        name = "m"
        provider = "mock"
        models = ["gpt-4o", "e"]
        "#,
    );
    let path = config.0.display().to_string();
    let (ok, out, err) = sluice(&["check", "--config", &path], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("cache: memory, scope org, ttl 1h0m0s; semantic: threshold 0.95 via e, index pgvector postgres://sluice:***@db:5432/cache"),
        "{out}"
    );
    assert!(
        out.contains("usage ledger: postgres://sluice:***@db:5432/usage"),
        "{out}"
    );
    assert!(
        out.contains(
            "files, batches and async jobs: postgres://sluice:***@db:5432/jobs, file bytes in /shared/files"
        ),
        "{out}"
    );
    assert!(
        out.contains("runtime keys: postgres://sluice:***@db:5432/keys"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn check_rejects_bad_configs_with_paths() {
    let cases = [
        (
            "[queue]\nmax_wait_by_class = { batch = \"5 parsecs\" }\n[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n",
            "queue.max_wait_by_class.batch",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[deployments]]\nname = \"b\"\nprovider = \"openai\"\nbase_url = \"ftp://x\"\nmodels = [\"m\"]\n",
            "deployments[1].base_url",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\nweight = \"heavy\"\n",
            "deployments[0].weight",
        ),
        (
            "[[deployments]]\nprovider = \"mock\"\nmodels = [\"m\"]\n",
            "deployments[0].name",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"azure\"\nbase_url = \"https://x\"\nmodels = [\"m\"]\n",
            "deployments[0].api_version",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[keys]]\nname = \"k\"\nkey = \"sk-aaaaaaaaa\"\nmodels = [\"other\"]\n",
            "keys[0].models",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\napi_key = \"${SLUICE_TEST_UNSET_VAR}\"\n",
            "deployments[0].api_key: environment variable `SLUICE_TEST_UNSET_VAR` is not set",
        ),
        ("[server]\nlistn = \"x\"\n", "unknown field `listn`"),
        (
            "[server]\nworkers = 5000\n[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n",
            "server.workers: at most 1024 (0 means one per core)",
        ),
        (
            "[server]\nruntime = \"threads\"\n",
            "threads for key `server.runtime`",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[models.m]\nfallbacks = [\"nope\"]\n",
            "models.m.fallbacks[0]: `nope` is not another served model",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[models.m.hedge]\npercentile = 100\nbudget_percent = 0\n",
            "models.m.hedge.percentile: must be at least 50 and below 100",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[models.m.hedge]\nbudget_percent = 80\n",
            "models.m.hedge.budget_percent: must be above 0 and at most 50",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[models.m]\nstrategy = \"fastest\"\n",
            "fastest for key `models.m.strategy`",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[retry]\nmax_attempts = 0\n",
            "retry.max_attempts: must be at least 1",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[routes]]\nname = \"chat\"\ndefault = \"nope\"\n",
            "routes[0].default: `nope` is not served by any deployment",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[splits]]\nname = \"m\"\nvariants = [{ model = \"m\" }]\n",
            "`m` is both a deployment model and a route/auto/split name",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[keys]]\nname = \"k\"\nkey = \"sk-aaaaaaaaa\"\npriority = \"urgent\"\n",
            "keys[0]",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[keys]]\nname = \"k\"\nkey = \"sk-aaaaaaaaa\"\ntier = \"gold\"\n",
            "keys[0].tier: no [tiers.gold] section",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\nrpm = 0\n",
            "deployments[0].rpm: must be at least 1",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[redis]\nurl = \"http://x\"\n",
            "redis.url",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"openai\"\nbase_url = \"https://user:s3cret-pw@api.example.com/v1\"\nmodels = [\"m\"]\n",
            "deployments[0].base_url: must not contain credentials",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[server]\nmax_response_bytes = 0\n",
            "server.max_response_bytes: must be greater than 0",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[keys]]\nname = \"k\"\nid = \"has space\"\nkey = \"sk-aaaaaaaaa\"\n",
            "keys[0].id: must be 1 to 64 characters",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[keys]]\nname = \"k\"\nkey = \"sk-aaaaaaaaa\"\n[[keys]]\nname = \"j\"\nid = \"k\"\nkey = \"sk-bbbbbbbbb\"\n",
            "keys[1].id: `k` is the id of another key",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[admin]\nkeys_store = \"keys.txt\"\n",
            "admin.keys_store: `keys.txt` is not",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[admin]\nkeys_store = \"postgres://u:s3cret-pw@h:port/x\"\n",
            "admin.keys_store: not a valid postgres:// URL",
        ),
        (
            "[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[admin]\nkeys_poll_interval = \"1ms\"\n",
            "admin.keys_poll_interval: must be between 100ms and 1h",
        ),
        ("[[deployments]\n", "invalid TOML"),
    ];
    for (text, expected) in cases {
        let file = write_config(text);
        let (ok, _out, err) = sluice(&["check", "--config", file.0.to_str().unwrap()], &[]);
        assert!(!ok, "accepted:\n{text}");
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(!err.contains("s3cret-pw"), "a password was echoed: {err}");
    }
    let (ok, _, err) = sluice(&["check", "--config", "/nonexistent/sluice.toml"], &[]);
    assert!(!ok && err.contains("cannot read config file"), "{err}");
}

#[test]
fn variables_and_environment_overrides() {
    let text = r#"
        [server]
        listen = "127.0.0.1:${PORT:-8080}"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "${BASE}/v1"
        api_key = "${UPSTREAM_KEY}"
        models = ["gpt-4o"]
        "#;
    let mut env: HashMap<String, String> = [
        ("BASE", "https://api.example.com"),
        ("UPSTREAM_KEY", "sk-up"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = load_from_str(text, "t", &env).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.deployments[0].base_url, "https://api.example.com/v1");
    assert_eq!(config.deployments[0].api_key.as_deref(), Some("sk-up"));

    env.insert("SLUICE__SERVER__LISTEN".into(), "0.0.0.0:9000".into());
    env.insert("SLUICE__SERVER__STREAM_KEEPALIVE".into(), "2s".into());
    env.insert("SLUICE__AUTH__REQUIRED".into(), "false".into());
    let config = load_from_str(text, "t", &env).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:9000");
    assert_eq!(
        config.server.stream_keepalive,
        std::time::Duration::from_secs(2)
    );
    assert!(!config.auth.required);

    env.remove("UPSTREAM_KEY");
    let error = load_from_str(text, "t", &env).unwrap_err().to_string();
    assert_eq!(
        error,
        "deployments[0].api_key: environment variable `UPSTREAM_KEY` is not set"
    );
}

#[test]
fn sluice_config_env_names_the_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let path = format!("{root}/config/sluice.toml");
    let (ok, out, err) = sluice(&["check"], &[("SLUICE_CONFIG", &path)]);
    assert!(ok, "{err}");
    assert!(out.starts_with("config OK"));
    let _ = std::io::stdout().flush();
}
