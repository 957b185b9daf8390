//! Response cache benchmark: `cargo bench --bench cache`.
//!
//! 1. Exact-match cache hits through Sluice, in-memory store, against the same
//!    request sent direct to an instant fake upstream and through a gateway
//!    with the cache off: c1 p50/p99 and cN req/s, rotating rounds, medians.
//! 2. The same hit path with the Redis store (`BENCH_REDIS_URL`, default
//!    redis://127.0.0.1:6379), skipped with a note when Redis is unreachable.
//! 3. The semantic index alone: insert cost and `nearest` latency at
//!    100,000 entries of 1536 dimensions in one partition, for near-duplicate
//!    queries (with recall) and unrelated ones (with false matches), against
//!    one brute-force exact scan.
//! 4. The pgvector index (`[cache.semantic] store = "postgres"`): the first
//!    `BENCH_PGVECTOR_ENTRIES` (default 20,000: building HNSW over 100,000
//!    takes minutes here) of the same vectors bulk-loaded into a fresh
//!    database on `BENCH_PGVECTOR_URL`
//!    (default postgres://postgres@127.0.0.1:5433/postgres, which
//!    `scripts/ensure-deps.sh` starts), the HNSW index built, then Sluice's
//!    own lookup (`PgIndex::nearest`, one query over a local socket) for the
//!    same kinds of query. Skipped with a note when that server is down.
//!
//! Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
//! BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS, BENCH_REDIS_URL,
//! BENCH_SEMANTIC_ENTRIES, BENCH_SEMANTIC_QUERIES, BENCH_PGVECTOR_URL,
//! BENCH_PGVECTOR_ENTRIES.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench prints its report and stops at a broken setup"
)]

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice::engines::cache::CacheKey;
use sluice::engines::cache::semantic_index::SemanticIndex;
use sluice::engines::cache::semantic_pg::{self, PgIndex};

use common::{COMPLETION, Gateway, Params, env_or, exchange_body, gateway_toml};

/// Cacheable (temperature 0), and answered with `COMPLETION` by the fake
/// upstream.
const CACHEABLE: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"temperature":0}"#;
const CACHE_HEADER: &str = "x-sluice-cache";
const HITS: &str = r#"sluice_cache_requests_total{result="hit"}"#;
const MISSES: &str = r#"sluice_cache_requests_total{result="miss"}"#;
/// Long enough that the warmed entry outlives the run.
const CACHE_SECTION: &str = "[cache]\nenabled = true\nscope = \"global\"\nttl = \"10m\"\n";

const DIMENSIONS: usize = 1536;
const PARTITION: u64 = 1;
const THRESHOLD: f32 = 0.95;
const BRUTE_FORCE_SCANS: usize = 20;

// ---------------------------------------------------------------------------
// 1 and 2. Gateways

/// Sends the cacheable request until a response is a hit (the first stores
/// the entry; a Redis store also needs its background connection), at most
/// 3 s. The hit must carry the upstream's bytes unchanged.
async fn warm(client: &reqwest::Client, url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (_, headers, body) = exchange_body(client, url, CACHEABLE).await;
        if headers.get(CACHE_HEADER).is_some_and(|v| v == "hit") {
            assert_eq!(body, COMPLETION.as_bytes(), "cache hit body differs");
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Starts a caching gateway and warms its entry; `Err` says why not.
async fn cached_gateway(
    client: &reqwest::Client,
    upstream: SocketAddr,
    sections: &str,
) -> Result<SocketAddr, String> {
    let addr = common::start_gateway(&gateway_toml(upstream, "", sections)).await;
    let url = format!("http://{addr}/v1/chat/completions");
    if warm(client, &url).await {
        Ok(addr)
    } else {
        Err("no cache hit within 3 s of warming".to_owned())
    }
}

/// Starts the gateways, runs the rounds and prints the table and ratios.
async fn gateways(p: &Params) {
    let c = p.concurrency;
    let upstream = common::start_upstream().await;
    let client = common::client(c);

    let off =
        common::start_gateway(&gateway_toml(upstream, "", "[cache]\nenabled = false\n")).await;
    let mut paths = vec![
        Gateway::new("direct", upstream),
        Gateway::new("cache-off", off),
    ];
    // Sanity: the cache-off gateway relays the body and says nothing about caching.
    let (_, headers, body) = exchange_body(&client, &paths[1].url, CACHEABLE).await;
    assert_eq!(body, COMPLETION.as_bytes(), "cache-off body differs");
    assert!(
        !headers.contains_key(CACHE_HEADER),
        "cache-off gateway sent {CACHE_HEADER}"
    );

    let memory = cached_gateway(&client, upstream, CACHE_SECTION)
        .await
        .expect("in-memory cache");
    paths.push(Gateway::new("hit-memory", memory));

    let redis_url = common::redis_url();
    let prefix = format!("sluice-bench-{:016x}", fastrand::u64(..));
    let mut redis_connection = None;
    let redis_skipped = match common::probe_redis(&redis_url).await {
        Err(reason) => Some(format!("cannot reach {redis_url}: {reason}")),
        Ok(connection) => {
            redis_connection = Some(connection);
            let sections = format!(
                "{CACHE_SECTION}store = \"redis\"\n\n[redis]\nurl = {}\nkey_prefix = {}\n",
                toml::Value::String(redis_url.clone()),
                toml::Value::String(prefix.clone()),
            );
            match cached_gateway(&client, upstream, &sections).await {
                Ok(addr) => {
                    paths.push(Gateway::new("hit-redis", addr));
                    None
                }
                Err(reason) => Some(format!("gateway with Redis store at {redis_url}: {reason}")),
            }
        }
    };

    // Counters before measuring, to check afterwards that every measured
    // request to a caching gateway was a hit.
    let mut before = Vec::new();
    for path in &paths[2..] {
        let addr = path.addr;
        before.push((
            common::metric(&client, addr, HITS).await,
            common::metric(&client, addr, MISSES).await,
        ));
    }

    println!(
        "1/2. cache hits vs direct vs cache off, one instant fake upstream: {}",
        p.plan()
    );
    common::run_rounds(&client, &mut paths, CACHEABLE, p).await;

    let (c1, loaded) = common::print_round_medians(&paths, c);

    // Sanity: the caching gateways served hits only, and still do.
    for (path, (hits_before, misses_before)) in paths[2..].iter().zip(before) {
        let addr = path.addr;
        let hits = common::metric(&client, addr, HITS).await - hits_before;
        let misses = common::metric(&client, addr, MISSES).await - misses_before;
        let (_, headers, _) = exchange_body(&client, &path.url, CACHEABLE).await;
        let still = headers.get(CACHE_HEADER).is_some_and(|v| v == "hit");
        if misses > 0.0 || !still {
            println!(
                "WARNING: {}: {misses} misses during the rounds, a hit after them: {still}",
                path.name
            );
        } else {
            println!(
                "{}: all {hits} requests of the rounds (warm-ups included) were cache hits",
                path.name
            );
        }
    }
    // Indices: 0 direct, 1 cache-off, 2 hit-memory, 3 hit-redis.
    println!();
    common::print_ratios("memory hit / cache off", c, (&c1, &loaded), 2, 1);
    common::print_ratios("memory hit / direct", c, (&c1, &loaded), 2, 0);
    match &redis_skipped {
        Some(reason) => println!("redis: measurement skipped: {reason}"),
        None => {
            println!(
                "redis hit vs memory hit, c1 p50 added latency: {:+.1} us  (redis/memory {:.3})",
                c1[3].p50_us - c1[2].p50_us,
                c1[3].p50_us / c1[2].p50_us
            );
            println!(
                "redis hit / memory hit, c{c} throughput: {:.3}",
                loaded[3].rps / loaded[2].rps
            );
            println!(
                "redis hit / cache off, c1 p50 latency: {:.3}; c{c} throughput: {:.3}",
                c1[3].p50_us / c1[1].p50_us,
                loaded[3].rps / loaded[1].rps
            );
        }
    }

    // The entry expires on its own (ttl 10m); remove it anyway.
    if let Some(mut connection) = redis_connection {
        let pattern = format!("{{{prefix}}}:*");
        let cleanup = async {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut connection)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<i64>(&mut connection)
                    .await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), cleanup).await;
    }
}

// ---------------------------------------------------------------------------
// 3. The semantic index

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn random_unit(rng: &mut fastrand::Rng) -> Vec<f32> {
    normalise((0..DIMENSIONS).map(|_| rng.f32() - 0.5).collect())
}

/// A copy with uniform noise of +-0.01 per component, renormalised (cosine
/// to the original about 0.975 at 1536 dimensions).
fn perturbed(rng: &mut fastrand::Rng, v: &[f32]) -> Vec<f32> {
    normalise(v.iter().map(|x| x + (rng.f32() - 0.5) * 0.02).collect())
}

/// The exact answer `nearest` approximates: every entry, best cosine at or
/// above the threshold.
fn brute_force(vectors: &[Vec<f32>], query: &[f32]) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in vectors.iter().enumerate() {
        let cosine: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
        if cosine >= THRESHOLD && best.is_none_or(|(_, b)| cosine > b) {
            best = Some((i, cosine));
        }
    }
    best
}

fn percentile_us(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
    samples.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn print_index_header() {
    println!(
        "{:<44}{:>12}{:>12}{:>12}",
        "measurement", "p50_us", "p99_us", "result"
    );
}

/// One line of an index table; `-` where a percentile was not measured.
fn index_row(label: &str, p50_us: Option<f64>, p99_us: Option<f64>, result: &str) {
    let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "{label:<44}{:>12}{:>12}{result:>12}",
        us(p50_us),
        us(p99_us)
    );
}

/// The near-duplicate (recall) and unrelated (false matches) lookup lines,
/// each from (latencies, count, queries); returns their p50s.
fn print_lookup_rows(
    near: (&mut [Duration], usize, usize),
    strangers: (&mut [Duration], usize, usize),
) -> (f64, f64) {
    let lines = [
        ("(a) nearest, near-duplicate (recall)", near),
        ("(b) nearest, unrelated (false matches)", strangers),
    ];
    let p50s = lines.map(|(label, (latencies, count, queries))| {
        let p50 = percentile_us(latencies, 0.50);
        index_row(
            label,
            Some(p50),
            Some(percentile_us(latencies, 0.99)),
            &format!("{:.3}", count as f64 / queries.max(1) as f64),
        );
        p50
    });
    (p50s[0], p50s[1])
}

/// Times `nearest` per query; returns the latencies and the answers.
fn lookups(
    index: &SemanticIndex,
    queries: &[Vec<f32>],
) -> (Vec<Duration>, Vec<Option<(CacheKey, f32)>>) {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut answers = Vec::with_capacity(queries.len());
    for query in queries {
        let now = Instant::now();
        let started = Instant::now();
        let answer = black_box(index.nearest(PARTITION, black_box(query), THRESHOLD, now));
        latencies.push(started.elapsed());
        answers.push(answer);
    }
    (latencies, answers)
}

/// What part 3 measured and part 4 measures again in PostgreSQL.
struct Workload {
    vectors: Vec<Vec<f32>>,
    targets: Vec<usize>,
    near: Vec<Vec<f32>>,
    strangers: Vec<Vec<f32>>,
}

fn semantic() -> Workload {
    let entries = env_or("BENCH_SEMANTIC_ENTRIES", 100_000usize).max(1);
    let queries = env_or("BENCH_SEMANTIC_QUERIES", 1_000usize).max(1);
    let mut rng = fastrand::Rng::with_seed(0x5eed_cace);
    println!(
        "3. semantic index: {entries} random unit vectors x {DIMENSIONS} dims (f32) in one partition, threshold {THRESHOLD}, {queries} queries per kind, one thread"
    );

    let vectors: Vec<Vec<f32>> = (0..entries).map(|_| random_unit(&mut rng)).collect();
    let copies = vectors.clone();
    let mut index = SemanticIndex::new(DIMENSIONS, 200_000.max(entries * 2), 42);
    let expires = Instant::now() + Duration::from_secs(3600);
    let started = Instant::now();
    for (i, vector) in copies.into_iter().enumerate() {
        index.insert(PARTITION, vector, CacheKey(i as u128), expires);
    }
    let insert_total = started.elapsed();
    assert_eq!(index.len(), entries, "index dropped entries");

    // (a) near-duplicates of stored entries; (b) unrelated vectors.
    let targets: Vec<usize> = (0..queries).map(|_| rng.usize(..entries)).collect();
    let near: Vec<Vec<f32>> = targets
        .iter()
        .map(|&t| perturbed(&mut rng, &vectors[t]))
        .collect();
    let strangers: Vec<Vec<f32>> = (0..queries).map(|_| random_unit(&mut rng)).collect();

    let (mut near_us, near_answers) = lookups(&index, &near);
    let (mut stranger_us, stranger_answers) = lookups(&index, &strangers);
    let recalled = near_answers
        .iter()
        .zip(&targets)
        .filter(|(answer, t)| answer.is_some_and(|(key, _)| key == CacheKey(**t as u128)))
        .count();
    let false_matches = stranger_answers.iter().filter(|a| a.is_some()).count();
    let mean_cosine = {
        let cosines: Vec<f32> = near
            .iter()
            .zip(&targets)
            .map(|(q, &t)| q.iter().zip(&vectors[t]).map(|(a, b)| a * b).sum())
            .collect();
        cosines.iter().sum::<f32>() / cosines.len() as f32
    };

    // Brute force over the first near-duplicate queries, for its time and
    // its (exact) recall on the same queries.
    let scans = BRUTE_FORCE_SCANS.min(queries);
    let mut scan_us = Vec::with_capacity(scans);
    let mut scan_found = 0;
    for (query, &target) in near.iter().zip(&targets).take(scans) {
        let started = Instant::now();
        let answer = black_box(brute_force(&vectors, black_box(query)));
        scan_us.push(started.elapsed());
        scan_found += usize::from(answer.is_some_and(|(i, _)| i == target));
    }
    let lsh_found_on_scanned = near_answers
        .iter()
        .zip(&targets)
        .take(scans)
        .filter(|(answer, t)| answer.is_some_and(|(key, _)| key == CacheKey(**t as u128)))
        .count();

    print_index_header();
    index_row(
        "insert (mean per entry)",
        Some(insert_total.as_secs_f64() * 1e6 / entries as f64),
        None,
        &format!("{:.1} s", insert_total.as_secs_f64()),
    );
    let (near_p50, stranger_p50) = print_lookup_rows(
        (&mut near_us, recalled, queries),
        (&mut stranger_us, false_matches, queries),
    );
    let scan_p50 = percentile_us(&mut scan_us, 0.50);
    index_row(
        &format!("brute-force exact scan, {scans} scans (recall)"),
        Some(scan_p50),
        Some(percentile_us(&mut scan_us, 0.99)),
        &format!("{:.3}", scan_found as f64 / scans as f64),
    );
    println!();
    println!(
        "near-duplicate queries: mean cosine to their original {mean_cosine:.4}; LSH found {recalled}/{queries} (on the {scans} scanned: LSH {lsh_found_on_scanned}, exact {scan_found})"
    );
    println!(
        "brute-force scan / LSH nearest, p50: {:.0}x (near-duplicate), {:.0}x (unrelated)",
        scan_p50 / near_p50,
        scan_p50 / stranger_p50
    );
    Workload {
        vectors,
        targets,
        near,
        strangers,
    }
}

// ---------------------------------------------------------------------------
// 4. The pgvector index

/// Rows per bulk `INSERT` (5 parameters each).
const LOAD_ROWS: usize = 500;

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn pgvector(work: &Workload) {
    let admin_url = std::env::var("BENCH_PGVECTOR_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".into());
    let admin = match connect(&admin_url).await {
        Ok(admin) => admin,
        Err(error) => {
            println!("4. pgvector index: skipped, cannot reach {admin_url}: {error}");
            return;
        }
    };
    let database = format!("sluice_bench_{}", fastrand::u32(..));
    admin
        .batch_execute(&format!("CREATE DATABASE {database}"))
        .await
        .expect("CREATE DATABASE");
    let url = format!(
        "{}/{database}",
        admin_url.rsplit_once('/').map_or("", |p| p.0)
    );
    let entries = env_or("BENCH_PGVECTOR_ENTRIES", 20_000usize).clamp(1, work.vectors.len());
    let vectors = &work.vectors[..entries];
    // Near-duplicates of loaded entries only.
    let (near, targets): (Vec<Vec<f32>>, Vec<usize>) = work
        .near
        .iter()
        .zip(&work.targets)
        .filter(|(_, t)| **t < entries)
        .map(|(q, t)| (q.clone(), *t))
        .unzip();
    println!(
        "4. pgvector index (PostgreSQL {}): the first {entries} of those vectors bulk-loaded, HNSW built, lookups through PgIndex::nearest ({} near-duplicate queries)",
        admin
            .query_one("SHOW server_version", &[])
            .await
            .map_or_else(|_| "?".into(), |row| row.get::<_, String>(0)),
        near.len()
    );

    let index = PgIndex::start(
        &url,
        sluice::infra::metrics::Metrics::new().expect("metrics"),
        &sluice::util::tasks::Tasks::new(),
    );
    // The first lookup connects and creates the table.
    assert!(
        index
            .nearest(PARTITION, &work.near[0], THRESHOLD)
            .await
            .is_none()
    );
    let loader = connect(&url).await.expect("connect to the bench database");
    let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
    let started = Instant::now();
    for (chunk_index, chunk) in vectors.chunks(LOAD_ROWS).enumerate() {
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let rows: Vec<(i64, String, i32, pgvector::Vector)> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let key = CacheKey((chunk_index * LOAD_ROWS + i) as u128);
                (
                    PARTITION as i64,
                    key.hex(),
                    DIMENSIONS as i32,
                    pgvector::Vector::from(v.clone()),
                )
            })
            .collect();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        for row in &rows {
            params.extend_from_slice(&[&row.0, &row.1, &row.2, &row.3, &expires]);
        }
        loader
            .execute(
                &format!(
                    "INSERT INTO sluice_semantic_cache (partition, cache_key, dims, embedding, expires_at) VALUES {}",
                    placeholders.join(", ")
                ),
                &params,
            )
            .await
            .expect("bulk insert");
    }
    let loaded = started.elapsed();
    let started = Instant::now();
    loader
        .batch_execute(&format!(
            "SET maintenance_work_mem = '2GB'; {}; ANALYZE sluice_semantic_cache",
            semantic_pg::hnsw_index(DIMENSIONS)
        ))
        .await
        .expect("building the HNSW index");
    let built = started.elapsed();

    let timed = async |queries: &[Vec<f32>]| {
        let mut latencies = Vec::with_capacity(queries.len());
        let mut answers = Vec::with_capacity(queries.len());
        for query in queries {
            let started = Instant::now();
            answers.push(index.nearest(PARTITION, query, THRESHOLD).await);
            latencies.push(started.elapsed());
        }
        (latencies, answers)
    };
    let (mut near_us, near_answers) = timed(&near).await;
    let (mut stranger_us, stranger_answers) = timed(&work.strangers).await;
    let recalled = near_answers
        .iter()
        .zip(&targets)
        .filter(|(answer, t)| **answer == Some(CacheKey(**t as u128)))
        .count();
    let false_matches = stranger_answers.iter().filter(|a| a.is_some()).count();
    print_index_header();
    index_row(
        "bulk load (mean per entry)",
        Some(loaded.as_secs_f64() * 1e6 / entries as f64),
        None,
        &format!("{:.1} s", loaded.as_secs_f64()),
    );
    index_row(
        "HNSW build",
        None,
        None,
        &format!("{:.1} s", built.as_secs_f64()),
    );
    print_lookup_rows(
        (&mut near_us, recalled, near.len()),
        (&mut stranger_us, false_matches, work.strangers.len()),
    );
    drop((index, loader));
    admin
        .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .await
        .expect("DROP DATABASE");
}

fn main() {
    let p = Params::from_env();
    println!(
        "sluice cache bench: {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(gateways(&p));
    // Stops the gateways and the fake upstream before the CPU-bound part.
    drop(runtime);
    println!();
    let workload = semantic();
    println!();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(pgvector(&workload));
}
