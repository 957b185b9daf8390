//! What a process and its children spent, read from `/proc`: CPU time
//! (user + system), and the resident set.
#![allow(dead_code, reason = "shared by benches that each use part of it")]

use std::time::Duration;

/// CPU time summed over a process and its direct children (nginx's workers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
}

impl Usage {
    /// What was spent between `earlier` and `self`.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
        }
    }
}

/// `pid`'s CPU time plus its children's; zero where `/proc` cannot be read.
pub fn read(pid: u32) -> Usage {
    let ticks = clock_ticks();
    let mut usage = Usage::default();
    for process in std::iter::once(pid).chain(children(pid)) {
        if let Some((user, system)) = cpu_ticks(process) {
            usage.cpu += Duration::from_secs_f64((user + system) as f64 / ticks);
        }
    }
    usage
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// utime and stime, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid` and its direct children (nginx's master and its workers).
pub fn family(pid: u32) -> Vec<u32> {
    std::iter::once(pid).chain(children(pid)).collect()
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&process| parent(process) == Some(pid))
        .collect()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A process's resident set in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| field(&status, "VmRSS:"))
        .unwrap_or(0)
}
