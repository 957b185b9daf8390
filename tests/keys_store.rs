//! Runtime keys on real stores: SQLite files in a temp dir and fresh
//! PostgreSQL databases, with two `RuntimeKeys` on one store standing in
//! for two replicas.
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

use std::sync::Arc;
use std::time::Duration;

use common::postgres::{PLAIN, TestDatabase};
use sluice::config::{KeysStoreSpec, sha256};
use sluice::engines::keys::{
    Change, KeyPatch, KeySettings, KeyStoreError, KeysOptions, NewKey, RuntimeKeys,
};
use tokio_util::sync::CancellationToken;

fn sqlite_spec() -> KeysStoreSpec {
    let dir = std::env::temp_dir().join(format!("sluice-keys-{}", fastrand::u64(..)));
    KeysStoreSpec::Sqlite(dir.join("keys.sqlite"))
}

fn options(poll_interval: Duration, notifications: bool) -> KeysOptions {
    KeysOptions {
        poll_interval,
        notifications,
    }
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        settings: KeySettings {
            rpm: Some(60),
            models: Some(vec!["gpt-4o".into()]),
            ..KeySettings::default()
        },
    }
}

fn accept(_: &sluice::engines::keys::RuntimeKey) -> Result<(), KeyStoreError> {
    Ok(())
}

/// Starts `keys`' watcher; cancelled when the token is.
fn watch(keys: &Arc<RuntimeKeys>) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(keys.clone().watch(stop.clone()));
    stop
}

/// Waits up to `limit` for `keys` to report a change, then until `seen` holds.
async fn until_seen(
    keys: &RuntimeKeys,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    limit: Duration,
    seen: impl Fn(&RuntimeKeys) -> bool,
) {
    let wait = async {
        while !seen(keys) {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or_else(|_| panic!("not seen within {limit:?}"));
}

/// Create, read, update (merge semantics), revoke, on one store.
async fn lifecycle(keys: &RuntimeKeys) {
    let mut changes = keys.changes();
    let (key, secret) = keys.create(new_key("team-a"), accept).await.unwrap();
    assert!(
        changes.has_changed().unwrap(),
        "a local write bumps changes()"
    );
    changes.mark_unchanged();
    assert!(secret.starts_with("sk-sluice-") && secret.len() == 42);
    assert_eq!(key.key_sha256, hex::encode(sha256(&secret)));
    assert_eq!(keys.current().len(), 1);
    assert_eq!(keys.current()[0], key);

    let refused = keys
        .create(new_key("team-b"), |_| {
            Err(KeyStoreError::Rejected("no".into()))
        })
        .await;
    assert!(matches!(refused, Err(KeyStoreError::Rejected(_))));
    assert_eq!(keys.current().len(), 1, "a refused key is not stored");

    let patch = KeyPatch {
        tpm: Change::Set(1000),
        rpm: Change::Clear,
        org: Change::Set("eng".into()),
        ..KeyPatch::default()
    };
    let updated = keys.update(&key.id, &patch, accept).await.unwrap();
    assert_eq!(updated.settings.rpm, None);
    assert_eq!(updated.settings.tpm, Some(1000));
    assert_eq!(updated.settings.org.as_deref(), Some("eng"));
    assert_eq!(
        updated.settings.models, key.settings.models,
        "absent: unchanged"
    );
    assert_eq!(updated.key_sha256, key.key_sha256);
    assert_eq!(keys.current()[0], updated);
    assert!(changes.has_changed().unwrap());

    let missing = keys.update("key_0000000000000000", &patch, accept).await;
    assert!(matches!(missing, Err(KeyStoreError::NotFound(_))));

    keys.revoke(&key.id).await.unwrap();
    assert!(keys.current().is_empty());
    assert!(matches!(
        keys.revoke(&key.id).await,
        Err(KeyStoreError::NotFound(_))
    ));
    assert!(matches!(
        keys.update(&key.id, &patch, accept).await,
        Err(KeyStoreError::NotFound(_))
    ));
    // The name is free again; the old secret stays dead.
    let (again, _) = keys.create(new_key("team-a"), accept).await.unwrap();
    assert_ne!(again.key_sha256, key.key_sha256);
    assert!(matches!(
        keys.create(new_key("team-a"), accept).await,
        Err(KeyStoreError::DuplicateName(_))
    ));
}

/// A store on `spec`, opened (and loaded) with `options`.
async fn open(spec: &KeysStoreSpec, options: KeysOptions) -> RuntimeKeys {
    RuntimeKeys::open(spec, options, &sluice::util::tasks::Tasks::new())
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlite_keys_are_created_changed_and_revoked_and_survive_a_reopen() {
    let spec = sqlite_spec();
    let keys = open(&spec, options(Duration::from_secs(2), true)).await;
    lifecycle(&keys).await;
    drop(keys);
    let reopened = open(&spec, options(Duration::from_secs(2), true)).await;
    let names: Vec<String> = reopened.current().iter().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["team-a"]);
}

#[tokio::test]
async fn postgres_keys_are_created_changed_and_revoked() {
    let database = TestDatabase::create(PLAIN).await;
    let spec = KeysStoreSpec::Postgres(database.url());
    let keys = open(&spec, options(Duration::from_secs(2), true)).await;
    lifecycle(&keys).await;
    drop(keys);
    database.drop_database().await;
}

#[tokio::test]
async fn a_postgres_write_reaches_another_replica_within_a_second_by_notify() {
    let database = TestDatabase::create(PLAIN).await;
    let spec = KeysStoreSpec::Postgres(database.url());
    // Polling is too slow to matter: only NOTIFY can be this quick.
    let slow = options(Duration::from_secs(600), true);
    let writer = open(&spec, slow.clone()).await;
    let reader = Arc::new(open(&spec, slow).await);
    let mut changes = reader.changes();
    let stop = watch(&reader);

    // The first write may arrive by the reload that follows LISTEN; once it
    // has, the listener is up and the second can only come by NOTIFY.
    let (first, _) = writer.create(new_key("first"), accept).await.unwrap();
    until_seen(&reader, &mut changes, Duration::from_secs(10), |r| {
        r.current().iter().any(|k| k.id == first.id)
    })
    .await;
    let (second, _) = writer.create(new_key("second"), accept).await.unwrap();
    until_seen(&reader, &mut changes, Duration::from_secs(1), |r| {
        r.current().iter().any(|k| k.id == second.id)
    })
    .await;
    writer.revoke(&first.id).await.unwrap();
    until_seen(&reader, &mut changes, Duration::from_secs(1), |r| {
        !r.current().iter().any(|k| k.id == first.id)
    })
    .await;

    stop.cancel();
    drop((writer, reader));
    database.drop_database().await;
}

#[tokio::test]
async fn without_notify_a_postgres_write_arrives_by_polling() {
    let database = TestDatabase::create(PLAIN).await;
    let spec = KeysStoreSpec::Postgres(database.url());
    let writer = open(&spec, options(Duration::from_secs(600), true)).await;
    let poll = Duration::from_millis(300);
    let reader = Arc::new(open(&spec, options(poll, false)).await);
    let mut changes = reader.changes();
    let stop = watch(&reader);

    let (key, _) = writer.create(new_key("polled"), accept).await.unwrap();
    // A poll interval, and slack for a busy machine.
    until_seen(&reader, &mut changes, poll + Duration::from_secs(1), |r| {
        r.current().iter().any(|k| k.id == key.id)
    })
    .await;

    stop.cancel();
    drop((writer, reader));
    database.drop_database().await;
}

#[tokio::test]
async fn two_processes_on_one_sqlite_file_see_each_others_writes_by_polling() {
    let spec = sqlite_spec();
    let poll = Duration::from_millis(200);
    let a = Arc::new(open(&spec, options(poll, true)).await);
    let b = Arc::new(open(&spec, options(poll, true)).await);
    let (mut a_changes, mut b_changes) = (a.changes(), b.changes());
    let (stop_a, stop_b) = (watch(&a), watch(&b));

    let (key, _) = a.create(new_key("from-a"), accept).await.unwrap();
    until_seen(&b, &mut b_changes, Duration::from_secs(2), |b| {
        b.current().iter().any(|k| k.id == key.id)
    })
    .await;
    let patch = KeyPatch {
        rpm: Change::Set(7),
        ..KeyPatch::default()
    };
    b.update(&key.id, &patch, accept).await.unwrap();
    until_seen(&a, &mut a_changes, Duration::from_secs(2), |a| {
        a.current().iter().any(|k| k.settings.rpm == Some(7))
    })
    .await;
    b.revoke(&key.id).await.unwrap();
    until_seen(&a, &mut a_changes, Duration::from_secs(2), |a| {
        a.current().is_empty()
    })
    .await;

    stop_a.cancel();
    stop_b.cancel();
}

#[tokio::test]
async fn a_name_taken_on_another_replica_is_refused_by_the_store() {
    let spec = sqlite_spec();
    let quiet = options(Duration::from_secs(600), true);
    let a = open(&spec, quiet.clone()).await;
    let b = open(&spec, quiet).await;
    a.create(new_key("shared"), accept).await.unwrap();
    // `b` has not reloaded, so only the store's unique index can tell.
    assert!(b.current().is_empty());
    assert!(matches!(
        b.create(new_key("shared"), accept).await,
        Err(KeyStoreError::DuplicateName(_))
    ));
    assert_eq!(b.current().len(), 1, "the refusal made `b` catch up");
}

#[tokio::test]
async fn a_stale_update_starts_over_from_the_stored_key() {
    let spec = sqlite_spec();
    let quiet = options(Duration::from_secs(600), true);
    let a = open(&spec, quiet.clone()).await;
    let b = open(&spec, quiet).await;
    let (key, _) = a.create(new_key("k"), accept).await.unwrap();
    let set_tpm = KeyPatch {
        tpm: Change::Set(5),
        ..KeyPatch::default()
    };
    a.update(&key.id, &set_tpm, accept).await.unwrap();
    // `b` never loaded the key; its update reads the stored row, so `a`'s
    // change is kept.
    let set_rpm = KeyPatch {
        rpm: Change::Set(9),
        ..KeyPatch::default()
    };
    let merged = b.update(&key.id, &set_rpm, accept).await.unwrap();
    assert_eq!(
        (merged.settings.rpm, merged.settings.tpm),
        (Some(9), Some(5))
    );
    assert_eq!(merged.revision, 3);
}

#[tokio::test]
async fn postgres_down_is_not_fatal_and_the_watcher_keeps_trying() {
    // Nothing listens on port 1.
    let spec = KeysStoreSpec::Postgres("postgres://postgres@127.0.0.1:1/none".into());
    let keys = Arc::new(open(&spec, options(Duration::from_millis(100), true)).await);
    assert!(keys.current().is_empty());
    assert!(matches!(
        keys.create(new_key("x"), accept).await,
        Err(KeyStoreError::Unavailable(_))
    ));
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(keys.clone().watch(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_unopenable_sqlite_path_is_an_error() {
    let file = std::env::temp_dir().join(format!("sluice-keys-file-{}", fastrand::u64(..)));
    std::fs::write(&file, b"not a directory").unwrap();
    let spec = KeysStoreSpec::Sqlite(file.join("keys.sqlite"));
    let opened = RuntimeKeys::open(
        &spec,
        options(Duration::from_secs(2), true),
        &sluice::util::tasks::Tasks::new(),
    )
    .await;
    assert!(matches!(opened, Err(KeyStoreError::Open(_))));
    std::fs::remove_file(file).unwrap();
}
