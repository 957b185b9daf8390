//! The local directories the stores write to, checked before any store
//! opens. A relative `[usage] data_dir` (the default `data`) resolves
//! against the working directory (the image's `WORKDIR`, `/var/lib/sluice`);
//! a directory that cannot be created or written is a start-up error that
//! names the setting, the resolved path, the process's uid and what to do,
//! instead of a bare `Permission denied` from whichever store opened first.

use std::path::{Path, PathBuf};

use crate::config::{Config, KeysStoreSpec};

/// A directory a setting makes Sluice write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDir {
    /// The config key that puts it there, e.g. `usage.data_dir`.
    pub setting: &'static str,
    /// As written in the config.
    pub configured: PathBuf,
    /// Made absolute against the working directory.
    pub resolved: PathBuf,
}

/// Every local directory `config` writes to, once each (first setting wins).
pub fn storage_dirs(config: &Config) -> Vec<StorageDir> {
    let data_dir = config.usage.data_dir.as_str();
    let mut wanted: Vec<(&'static str, PathBuf)> = Vec::new();
    if config.usage.store != "none" {
        // The journal lives here whatever the store.
        wanted.push(("usage.data_dir", PathBuf::from(data_dir)));
    }
    if let Ok(Some(KeysStoreSpec::Sqlite(file))) = KeysStoreSpec::from_config(config) {
        wanted.push(("admin.keys_store", parent_of(&file)));
    }
    if let Ok(Some(spec)) = KeysStoreSpec::parse_named(&config.batch.store, data_dir, "jobs.sqlite")
    {
        if let KeysStoreSpec::Sqlite(file) = spec {
            wanted.push(("batch.store", parent_of(&file)));
        }
        wanted.push(("batch.files_dir", config.batch.files_dir_in(data_dir)));
    }
    let mut dirs: Vec<StorageDir> = Vec::with_capacity(wanted.len());
    for (setting, configured) in wanted {
        let resolved = absolute(&configured);
        if dirs.iter().all(|d| d.resolved != resolved) {
            dirs.push(StorageDir {
                setting,
                configured,
                resolved,
            });
        }
    }
    dirs
}

/// Creates each directory and proves it writable; the first failure as a
/// message an operator can act on.
pub fn prepare(config: &Config) -> Result<Vec<StorageDir>, String> {
    let dirs = storage_dirs(config);
    for dir in &dirs {
        check_writable(&dir.resolved).map_err(|error| refusal(dir, &error))?;
    }
    Ok(dirs)
}

fn parent_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Creates `dir` and writes, syncs and removes a probe file in it.
fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".sluice-write-check-{}", std::process::id()));
    let written = std::fs::write(&probe, b"ok");
    let _ = std::fs::remove_file(&probe);
    written
}

fn refusal(dir: &StorageDir, error: &std::io::Error) -> String {
    let resolved = dir.resolved.display();
    let how = if dir.configured.is_relative() {
        let cwd = std::env::current_dir()
            .map(|cwd| cwd.display().to_string())
            .unwrap_or_else(|_| "?".to_owned());
        format!(
            " (`{}` resolved against the working directory {cwd})",
            dir.configured.display()
        )
    } else {
        String::new()
    };
    format!(
        "{}: cannot write to {resolved}{how}: {error}; the process runs as uid {}. Mount a volume this user can write at {resolved}, or point {} at one (the image's data volume is /var/lib/sluice)",
        dir.setting,
        current_uid(),
        dir.setting,
    )
}

/// The uid the process runs as, read from `/proc` (no `libc` call needed).
fn current_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    fn config(text: &str) -> Config {
        load_from_str(text, "test", &Default::default()).unwrap()
    }

    const MOCK: &str =
        "[[deployments]]\nname = \"m\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n";

    #[test]
    fn lists_each_directory_once_resolved() {
        let dirs = storage_dirs(&config(MOCK));
        let settings: Vec<_> = dirs.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["usage.data_dir", "batch.files_dir"]);
        assert!(dirs.iter().all(|d| d.resolved.is_absolute()));
        let none = config(&format!(
            "[usage]\nstore = \"none\"\n[batch]\nstore = \"none\"\n{MOCK}"
        ));
        assert!(storage_dirs(&none).is_empty());
        let elsewhere = config(&format!(
            "[usage]\nstore = \"none\"\n[batch]\nstore = \"sqlite:/srv/jobs/j.sqlite\"\nfiles_dir = \"/srv/files\"\n{MOCK}"
        ));
        let resolved: Vec<_> = storage_dirs(&elsewhere)
            .into_iter()
            .map(|d| d.resolved)
            .collect();
        assert_eq!(
            resolved,
            [PathBuf::from("/srv/jobs"), PathBuf::from("/srv/files")]
        );
    }

    #[test]
    fn an_unwritable_directory_is_refused_with_what_to_do() {
        let blocker = std::env::temp_dir().join(format!("sluice-blocker-{}", std::process::id()));
        std::fs::write(&blocker, b"a file, not a directory").unwrap();
        let text = format!(
            "[usage]\ndata_dir = \"{}\"\n{MOCK}",
            blocker.join("data").display()
        );
        let error = prepare(&config(&text)).unwrap_err();
        let _ = std::fs::remove_file(&blocker);
        assert!(
            error.starts_with("usage.data_dir: cannot write to "),
            "{error}"
        );
        assert!(error.contains("uid "), "{error}");
        assert!(error.contains("Mount a volume"), "{error}");
    }
}
