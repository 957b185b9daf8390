//! The open-file limit: every client connection is a descriptor, and so is
//! the upstream connection a proxied request may hold. A soft limit of 1024
//! (a common default) would cap the gateway near 500 concurrent streams.

/// Descriptors kept back for listeners, Redis, the ledger's store, logs and
/// upstream connection pools when `max_connections` is derived.
const RESERVED_FDS: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the result.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// `[server] max_connections`, or when 0, half of the open-file limit after
/// the reserve: a client connection and its upstream connection each take one.
pub fn max_connections(configured: usize) -> usize {
    let limit = soft_limit();
    if configured > 0 {
        if let Some(limit) = limit
            && configured as u64 > limit.saturating_sub(RESERVED_FDS)
        {
            tracing::warn!(
                max_connections = configured,
                open_file_limit = limit,
                "[server] max_connections is above the open-file limit; accepts may fail with EMFILE"
            );
        }
        return configured;
    }
    let derived = limit.map_or(10_000, |limit| limit.saturating_sub(RESERVED_FDS) / 2);
    usize::try_from(derived).unwrap_or(usize::MAX).max(1)
}

#[cfg(unix)]
fn soft_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(not(unix))]
fn soft_limit() -> Option<u64> {
    None
}
