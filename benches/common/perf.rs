//! Linux `perf` beside a measured run (Debian's `linux-perf`, installed by
//! `scripts/bench-deps.sh`): the system calls a process makes, by kind,
//! from the kernel's syscall tracepoints, and where its CPU time goes, from
//! sampling its stacks. Each watches for the run's duration; `None` where
//! perf or its tracepoints are missing.
#![allow(dead_code, reason = "shared by benches that each use part of it")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The syscalls counted, by the name the bench prints.
const SYSCALLS: [(&str, &[&str]); 5] = [
    ("reads", &["read", "readv", "recvfrom", "recvmsg"]),
    ("writes", &["write", "writev", "sendto", "sendmsg"]),
    ("epoll", &["epoll_wait", "epoll_pwait", "epoll_ctl"]),
    ("futex", &["futex"]),
    ("accept", &["accept4", "accept"]),
];

/// System calls over a run, by kind, and in all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Syscalls {
    pub total: u64,
    pub by_kind: [u64; SYSCALLS.len()],
}

impl Syscalls {
    pub fn kinds() -> impl Iterator<Item = &'static str> {
        SYSCALLS.iter().map(|(name, _)| *name)
    }
}

fn perf() -> Option<&'static str> {
    let path = "/usr/bin/perf";
    let works = Command::new(path)
        .args(["stat", "-e", "raw_syscalls:sys_enter", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    works.then_some(path)
}

fn pid_list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Counting started; `finish` after the run.
pub struct Counting {
    child: Child,
    output: PathBuf,
}

/// Counts `pids`' system calls for `duration`.
pub fn count_syscalls(dir: &Path, pids: &[u32], duration: Duration) -> Option<Counting> {
    let perf = perf()?;
    let output = dir.join(format!("perf-stat-{}.csv", fastrand::u64(..)));
    let mut events = vec!["raw_syscalls:sys_enter".to_owned()];
    for (_, names) in SYSCALLS {
        events.extend(
            names
                .iter()
                .map(|name| format!("syscalls:sys_enter_{name}")),
        );
    }
    let child = Command::new(perf)
        .args(["stat", "-x", ",", "-o"])
        .arg(&output)
        .args([
            "-e",
            &events.join(","),
            "-p",
            &pid_list(pids),
            "--",
            "sleep",
        ])
        .arg(format!("{:.3}", duration.as_secs_f64()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Counting { child, output })
}

impl Counting {
    pub fn finish(mut self) -> Syscalls {
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let _ = std::fs::remove_file(&self.output);
        let mut counts = Syscalls::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let (Some(count), Some(event)) = (fields.first(), fields.get(2)) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            if *event == "raw_syscalls:sys_enter" {
                counts.total += count;
            }
            let name = event.trim_start_matches("syscalls:sys_enter_");
            for (kind, (_, names)) in SYSCALLS.iter().enumerate() {
                if names.contains(&name) {
                    counts.by_kind[kind] += count;
                }
            }
        }
        counts
    }
}

/// Sampling started; `finish` after the run.
pub struct Profiling {
    child: Child,
    data: PathBuf,
}

/// Samples `pid`'s stacks for `duration`.
pub fn profile(dir: &Path, pid: u32, duration: Duration) -> Option<Profiling> {
    let perf = perf()?;
    let data = dir.join(format!("perf-{}.data", fastrand::u64(..)));
    let child = Command::new(perf)
        .args(["record", "-F", "2000", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string(), "--", "sleep"])
        .arg(format!("{:.3}", duration.as_secs_f64()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Profiling { child, data })
}

impl Profiling {
    /// The `top` symbols by share of samples (self time), as
    /// `(percent, symbol)`.
    pub fn finish(mut self, top: usize) -> Vec<(f64, String)> {
        let _ = self.child.wait();
        let report = Command::new("/usr/bin/perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&self.data);
        let Ok(report) = report else {
            return Vec::new();
        };
        String::from_utf8_lossy(&report.stdout)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let line = line.trim();
                let (percent, rest) = line.split_once('%')?;
                // Columns padded to the longest symbol, then IPC columns.
                let words: Vec<&str> = rest.split_whitespace().collect();
                let end = words.iter().rposition(|word| *word != "-")? + 1;
                Some((percent.trim().parse().ok()?, words[..end].join(" ")))
            })
            .take(top)
            .collect()
    }
}
