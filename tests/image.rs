//! The image, run as it ships, without a container engine: the test reads
//! the `Dockerfile`'s last stage and builds its root filesystem the way that
//! stage and its distroless base do (the binary, the shipped config, the
//! C runtime libraries, CA roots, `/etc/passwd` with the nonroot user, the
//! volume's directory and its owner). It then starts the binary from it in
//! a private mount namespace: the root mounted read-only, the volume the
//! only writable place, chrooted, as the stage's `USER`, from its `WORKDIR`,
//! with only its `ENV`, running its `ENTRYPOINT` and `CMD`. The health
//! check runs the stage's `HEALTHCHECK` command the same way.
//!
//! Namespaces and chroot need root, which CI has; elsewhere these tests say
//! so and pass without running.
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

mod common;
#[path = "common/dockerfile.rs"]
mod dockerfile;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::FakeUpstream;
// The binary the image holds: this build's, or `SLUICE_BIN` (a release
// build, to time the start-up as shipped).
use common::process::{TempDir, binary, free_port};
use dockerfile::FinalStage;

/// Docker's default `PATH` (distroless sets the same).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Mounts the root read-only and the volume (and any file mounts) over it,
/// then becomes the image's user in it: `unshare` chroots, changes to the
/// working directory and sets the ids before it executes the command.
const LAUNCH: &str = r#"set -e
root=$1 volume=$2 target=$3 workdir=$4 uid=$5 gid=$6 mounts=$7 network=$8
shift 8
[ "$network" = private ] && ip link set lo up
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --bind "$volume" "$root$target"
for pair in $mounts; do
  mount --bind "${pair%%=*}" "$root${pair#*=}"
  mount -o remount,bind,ro "$root${pair#*=}"
done
exec unshare --root="$root" --wd="$workdir" --setuid "$uid" --setgid "$gid" "$@"
"#;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
}

/// The image's root filesystem, built from the Dockerfile.
struct Image {
    dir: TempDir,
    stage: FinalStage,
}

impl Image {
    fn build() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let stage =
            dockerfile::final_stage(&std::fs::read_to_string(repo.join("Dockerfile")).unwrap());
        assert!(
            stage.base.contains("distroless/cc"),
            "the test builds a distroless/cc root; base is now {}",
            stage.base
        );
        let image = Self {
            dir: TempDir::new("sluice-image"),
            stage,
        };
        let root = image.root();
        for copy in &image.stage.copies {
            let [source] = copy.sources.as_slice() else {
                panic!("one source per COPY in the last stage: {copy:?}");
            };
            let target = root.join(copy.destination.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            match copy.from.as_deref() {
                Some(_) if source.ends_with("/sluice") => {
                    std::fs::copy(binary(), &target).unwrap();
                }
                // The build stage's other output is the empty data directory.
                Some(_) => std::fs::create_dir_all(&target).unwrap(),
                None => {
                    std::fs::copy(repo.join(source), &target).unwrap();
                }
            }
            if let Some((uid, gid)) = copy.chown {
                std::os::unix::fs::chown(&target, Some(uid), Some(gid)).unwrap();
            }
        }
        image.add_distroless_base();
        image
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// What distroless/cc holds that the binary uses: the C runtime, CA
    /// roots, the users, a world-writable /tmp, and /proc for the runtime
    /// to mount.
    fn add_distroless_base(&self) {
        let root = self.root();
        let ldd = Command::new("ldd").arg(binary()).output().unwrap();
        let listing = String::from_utf8(ldd.stdout).unwrap();
        for library in listing.split_whitespace().filter(|w| w.starts_with('/')) {
            let target = root.join(library.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(library, &target).unwrap();
        }
        let certs = root.join("etc/ssl/certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            certs.join("ca-certificates.crt"),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }

    /// A fresh volume, as Docker makes one: the image's directory's owner.
    fn new_volume(&self) -> PathBuf {
        let target = &self.stage.volumes[0];
        let volume = self.dir.join(format!("volume-{}", fastrand::u32(..)));
        std::fs::create_dir_all(&volume).unwrap();
        let image_dir = self.root().join(target.trim_start_matches('/'));
        let meta = std::fs::metadata(image_dir).unwrap();
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&volume, Some(meta.uid()), Some(meta.gid())).unwrap();
        volume
    }

    fn ids(&self) -> (u32, u32) {
        self.stage.user.expect("the image sets a USER")
    }
}

/// How one container is run (`docker run` flags).
#[derive(Default)]
struct Run {
    /// `--network none` and a port of its own: reached with `nsenter`.
    isolated_network: bool,
    /// `-e NAME=value`.
    env: Vec<(String, String)>,
    /// `-v host:container:ro` for files.
    mounts: Vec<(PathBuf, String)>,
    /// `-w DIR` instead of the image's `WORKDIR`.
    workdir: Option<String>,
}

/// A running container; killed with its namespace on drop.
struct Container {
    launcher: Child,
    pid: u32,
    log: PathBuf,
}

impl Image {
    fn env(&self, run: &Run) -> Vec<(String, String)> {
        let mut env = vec![("PATH".to_owned(), PATH.to_owned())];
        env.extend(self.stage.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(run.env.iter().cloned());
        env
    }

    fn start(&self, volume: &Path, run: &Run) -> Container {
        let (uid, gid) = self.ids();
        let workdir = run
            .workdir
            .clone()
            .or_else(|| self.stage.workdir.clone())
            .unwrap_or_else(|| "/".to_owned());
        let mounts: Vec<String> = run
            .mounts
            .iter()
            .map(|(host, inside)| format!("{}={inside}", host.display()))
            .collect();
        let log = self
            .dir
            .join(format!("container-{}.log", fastrand::u32(..)));
        let mut namespaces = vec!["--mount", "--fork", "--kill-child"];
        if run.isolated_network {
            namespaces.push("--net");
        }
        let launcher = Command::new("unshare")
            .args(&namespaces)
            .args(["sh", "-c", LAUNCH, "sh"])
            .arg(self.root())
            .arg(volume)
            .arg(&self.stage.volumes[0])
            .arg(&workdir)
            .arg(uid.to_string())
            .arg(gid.to_string())
            .arg(mounts.join(" "))
            .arg(if run.isolated_network {
                "private"
            } else {
                "host"
            })
            .args(self.stage.command())
            .env_clear()
            .envs(self.env(run))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child_of(launcher.id());
        Container { launcher, pid, log }
    }
}

/// The forked child of `unshare --fork` (it becomes the binary by `exec`).
fn child_of(pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("unshare forked no child");
}

impl Container {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's status line (`Uid:` etc.) while it runs.
    fn status_field(&self, field: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(field).map(|v| v.trim().to_owned()))
            .unwrap()
    }

    /// Runs `program args` on the host inside the container's network.
    fn in_network(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-n", program])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the image's health check as Docker does: in the container,
    /// as its user, with its environment.
    fn healthcheck(&self, image: &Image, run: &Run) -> Output {
        let (uid, gid) = image.ids();
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-n", "-m", "--root", "--wd"])
            .args(["-S", &uid.to_string(), "-G", &gid.to_string()])
            .args(&image.stage.healthcheck)
            .env_clear()
            .envs(image.env(run))
            .output()
            .unwrap()
    }

    /// Waits for the process to exit; its exit code.
    fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.launcher.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the container did not exit: {}", self.log());
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The binary itself first: its switch to the image's user cleared
        // the parent-death signal `--kill-child` relies on, so killing the
        // launcher alone would leave it running.
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

fn curl(container: &Container, args: &[&str]) -> String {
    let output = container.in_network("curl", &[&["-sS", "--max-time", "10"], args].concat());
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The port the image listens on (its `SLUICE__SERVER__LISTEN`).
fn image_port(image: &Image) -> String {
    let listen = &image.stage.env["SLUICE__SERVER__LISTEN"];
    listen.rsplit_once(':').unwrap().1.to_owned()
}

fn wait_ready(container: &Container, url: &str) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let status = container.in_network(
            "curl",
            &["-s", "-o", "/dev/null", "-w", "%{http_code}", url],
        );
        if status.stdout == b"200" {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not ready: {}", container.log());
}

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

/// No mounts, no provider account: the shipped config on the mock.
#[test]
fn the_image_serves_as_shipped() {
    if !is_root() {
        eprintln!("skipped: the image test needs root for namespaces and chroot");
        return;
    }
    let image = Image::build();
    let volume = image.new_volume();
    let run = Run {
        isolated_network: true,
        ..Run::default()
    };
    let started = Instant::now();
    let mut container = image.start(&volume, &run);
    let base = format!("http://127.0.0.1:{}", image_port(&image));
    let ready_after = wait_ready(&container, &format!("{base}/readyz"));
    eprintln!(
        "ready {:?} after the start ({:?} after the process began)",
        started.elapsed(),
        ready_after
    );

    let (uid, gid) = image.ids();
    let ids = container.status_field("Uid:");
    assert!(ids.starts_with(&format!("{uid}\t")), "runs as {ids}");
    assert!(
        container
            .status_field("Gid:")
            .starts_with(&format!("{gid}\t"))
    );

    let chat = curl(
        &container,
        &[
            "-H",
            "content-type: application/json",
            "-H",
            "authorization: Bearer sk-sluice-demo-key",
            "-d",
            CHAT,
            &format!("{base}/v1/chat/completions"),
        ],
    );
    let answer: serde_json::Value = serde_json::from_str(&chat).unwrap();
    assert_eq!(answer["object"], "chat.completion", "{chat}");
    let stream = curl(
        &container,
        &[
            "-N",
            "-H",
            "content-type: application/json",
            "-d",
            STREAM,
            &format!("{base}/v1/chat/completions"),
        ],
    );
    assert!(stream.contains("chat.completion.chunk"), "{stream}");
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");

    let check = container.healthcheck(&image, &run);
    assert!(
        check.status.success(),
        "HEALTHCHECK failed: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Everything it wrote is in the volume, owned by the image's user.
    let data = volume.join("data");
    for file in ["usage.db", "jobs.sqlite"] {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(data.join(file)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{file}");
    }

    container.signal("-TERM");
    assert_eq!(
        container.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        container.log()
    );
    assert!(
        container.log().contains("usage ledger flushed"),
        "{}",
        container.log()
    );
}

/// A mounted config, a provider key from the environment, and the volume
/// surviving `kill -9`: the answered requests are in the ledger after a
/// restart on the same volume.
#[tokio::test]
async fn the_image_serves_a_mounted_config_and_keeps_its_data_across_kill_9() {
    if !is_root() {
        eprintln!("skipped: the image test needs root for namespaces and chroot");
        return;
    }
    let upstream = FakeUpstream::start("oa").await;
    let image = Image::build();
    let volume = image.new_volume();
    let config = image.dir.join("mounted.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nrequired = true\n[admin]\ntoken = \"${{SLUICE_ADMIN_TOKEN}}\"\n[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key = \"${{OPENAI_API_KEY}}\"\nmodels = [\"gpt-4o\"]\n[[keys]]\nname = \"team\"\nkey = \"sk-team-000000000\"\n",
            upstream.base_url()
        ),
    )
    .unwrap();
    let port = free_port();
    let run = Run {
        env: vec![
            ("SLUICE__SERVER__LISTEN".into(), format!("127.0.0.1:{port}")),
            ("OPENAI_API_KEY".into(), "sk-provider-secret".into()),
            ("SLUICE_ADMIN_TOKEN".into(), "admin-token-0000000000".into()),
        ],
        mounts: vec![(config, image.stage.env["SLUICE_CONFIG"].clone())],
        ..Run::default()
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut container = image.start(&volume, &run);
    wait_ready_host(&client, &base, &container).await;

    for n in 0..5 {
        let mut body: serde_json::Value = serde_json::from_str(CHAT).unwrap();
        body["user"] = format!("u{n}").into();
        let answer = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth("sk-team-000000000")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let refused = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-wrong-00000000")
        .json(&serde_json::from_str::<serde_json::Value>(CHAT).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let seen = upstream.recorded();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter()
            .all(|request| request.headers["authorization"] == "Bearer sk-provider-secret")
    );

    // Killed before the ledger's writer ran (its first flush is a second
    // away): the journal in the volume carries the records to the next
    // start. The journal takes a record within `journal_interval` of its
    // answer once its thread gets a core; 100 ms covers a loaded machine.
    tokio::time::sleep(Duration::from_millis(100)).await;
    container.signal("-KILL");
    container.wait(Duration::from_secs(5));
    let container = image.start(&volume, &run);
    wait_ready_host(&client, &base, &container).await;
    let usage: serde_json::Value = client
        .get(format!("{base}/admin/usage?group_by=key"))
        .bearer_auth("admin-token-0000000000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests: i64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(requests, 5, "each answered request once: {usage}");
    drop(container);
}

async fn wait_ready_host(client: &reqwest::Client, base: &str, container: &Container) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not ready: {}", container.log());
}

/// Run from another working directory (`docker run -w /`), the relative
/// data directory cannot be written: the start fails at once and says
/// where, as whom and what to do. A read-only volume says the same.
#[test]
fn an_unwritable_data_directory_is_refused_with_a_clear_error() {
    if !is_root() {
        eprintln!("skipped: the image test needs root for namespaces and chroot");
        return;
    }
    let image = Image::build();
    let (uid, _) = image.ids();
    let volume = image.new_volume();
    let run = Run {
        isolated_network: true,
        workdir: Some("/".into()),
        ..Run::default()
    };
    let mut container = image.start(&volume, &run);
    assert_eq!(container.wait(Duration::from_secs(10)), Some(1));
    let log = container.log();
    assert!(
        log.contains("usage.data_dir: cannot write to /data (`data` resolved against the working directory /)"),
        "{log}"
    );
    assert!(log.contains(&format!("uid {uid}")), "{log}");

    let read_only = image.new_volume();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut container = image.start(
        &read_only,
        &Run {
            isolated_network: true,
            ..Run::default()
        },
    );
    assert_eq!(container.wait(Duration::from_secs(10)), Some(1));
    assert!(
        container
            .log()
            .contains("cannot write to /var/lib/sluice/data"),
        "{}",
        container.log()
    );
}
