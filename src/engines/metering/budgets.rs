//! Spend budgets per key and org over UTC days and months. Enforced before a
//! call (a spent budget refuses new requests with 429 `insufficient_quota`;
//! a call already running completes and is billed), charged from the real
//! usage after it, with alerts at thresholds once per period. Counters live
//! in memory or, with `[redis]`, in Redis so replicas share one budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde_json::json;
use tracing::Instrument;

use super::period::{Period, rfc3339};
use crate::config::{AlertsConfig, Budget, Config, OnRedisError};
use crate::infra::Shared;
use crate::infra::metrics::Metrics;
use crate::infra::redis::SharedRedis;
use crate::infra::telemetry::LogEvery;
use crate::util::tasks::Tasks;
use crate::vocab::error::GatewayError;

/// Dollars with cents, or with enough digits to show sub-cent amounts.
fn usd(amount: f64) -> String {
    if amount >= 0.01 {
        return format!("${amount:.2}");
    }
    let text = format!("{amount:.8}");
    format!("${}", text.trim_end_matches('0'))
}

/// Time source, so tests can move to the next period.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

enum Store {
    /// One counter pair per configured key and org, taken from `SpendState`
    /// when the snapshot is built, so a request only locks its own subject's
    /// counter: no shared map writes, no counter names formatted.
    Memory {
        keys: HashMap<String, Arc<Spend>>,
        orgs: HashMap<String, Arc<Spend>>,
        state: Arc<SpendState>,
    },
    Redis {
        redis: SharedRedis,
        prefix: String,
        /// `[redis] on_error`: whether an unreadable budget admits or refuses.
        on_error: OnRedisError,
    },
}

pub struct Budgets {
    /// By key id: the key's budget and its name.
    keys: HashMap<String, (Budget, String)>,
    orgs: HashMap<String, Budget>,
    store: Store,
    alerts: AlertsConfig,
    webhook: reqwest::Client,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// Store failures are counted each time, logged at most this often.
    store_log: LogEvery,
    /// Owns alert webhooks and shared-store charges.
    pub(super) tasks: Tasks,
}

/// In-memory spend that outlives a config snapshot, by key id and org name:
/// a reload that keeps a budget keeps what was spent against it.
#[derive(Default)]
pub struct SpendState {
    keys: DashMap<String, Arc<Spend>>,
    orgs: DashMap<String, Arc<Spend>>,
    /// The period in which each alert (subject, period kind, threshold) was
    /// last sent: one entry per alert, not one per period, so it stays as
    /// small as the config.
    fired: DashMap<String, i64>,
}

impl SpendState {
    /// Whether this alert has not been sent in this period yet (and now is).
    fn first_in_period(&self, limit: &Limit<'_>, threshold: f64, now: SystemTime) -> bool {
        let period = limit.period.index(now);
        let previous = self.fired.insert(Self::alert(limit, threshold), period);
        previous != Some(period)
    }

    /// Whether this alert was sent in this period.
    fn sent_in_period(&self, limit: &Limit<'_>, threshold: f64, now: SystemTime) -> bool {
        let sent = self.fired.get(&Self::alert(limit, threshold));
        sent.is_some_and(|period| *period == limit.period.index(now))
    }

    fn alert(limit: &Limit<'_>, threshold: f64) -> String {
        let (scope, name, period) = (limit.scope, limit.name, limit.period.as_str());
        format!("{scope}:{name}:{period}:{threshold}")
    }

    fn counters(
        subjects: &DashMap<String, Arc<Spend>>,
        names: impl Iterator<Item = String>,
    ) -> HashMap<String, Arc<Spend>> {
        let counters: HashMap<String, Arc<Spend>> = names
            .map(|name| {
                let spend = subjects.entry(name.clone()).or_default().clone();
                (name, spend)
            })
            .collect();
        subjects.retain(|name, _| counters.contains_key(name));
        counters
    }
}

/// What a subject spent in its current day and month: (period index, USD).
#[derive(Default)]
struct Spend {
    day: Mutex<(i64, f64)>,
    month: Mutex<(i64, f64)>,
}

impl Spend {
    fn period(&self, period: Period) -> &Mutex<(i64, f64)> {
        match period {
            Period::Day => &self.day,
            Period::Month => &self.month,
        }
    }
}

/// One limit that applies to a request: who, which period, how much.
struct Limit<'a> {
    scope: &'static str,
    /// The subject's stable name: a key's id, an org's name. Counters and
    /// alert markers are stored under it.
    name: &'a str,
    /// What people call it: a key's name (a runtime key's id is `key_...`).
    shown: &'a str,
    period: Period,
    usd: f64,
}

impl Budgets {
    /// `None` when no key or org has a budget.
    pub fn from_config(
        config: &Config,
        state: &Arc<SpendState>,
        clock: Arc<dyn Clock>,
        shared: &Shared,
    ) -> Option<Self> {
        let (redis, metrics, tasks) = (
            shared.redis.as_ref(),
            shared.metrics.clone(),
            shared.tasks.clone(),
        );
        let keys: HashMap<String, (Budget, String)> = config
            .keys
            .iter()
            .filter(|k| k.spend.budget_daily_usd.is_some() || k.spend.budget_monthly_usd.is_some())
            .map(|k| (k.id().to_owned(), (k.spend, k.name.clone())))
            .collect();
        if keys.is_empty() && config.org_budgets.is_empty() {
            return None;
        }
        let store = match redis {
            Some(redis) => Store::Redis {
                on_error: config
                    .redis
                    .as_ref()
                    .map_or_else(OnRedisError::default, |r| r.on_error),
                redis: redis.clone(),
                prefix: format!(
                    "{{{}}}:budget:",
                    config
                        .redis
                        .as_ref()
                        .map_or("sluice", |r| r.key_prefix.as_str())
                ),
            },
            None => Store::Memory {
                keys: SpendState::counters(&state.keys, keys.keys().cloned()),
                orgs: SpendState::counters(&state.orgs, config.org_budgets.keys().cloned()),
                state: state.clone(),
            },
        };
        Some(Self {
            keys,
            orgs: config.org_budgets.clone(),
            store,
            alerts: config.alerts.clone(),
            webhook: reqwest::Client::new(),
            clock,
            metrics,
            store_log: LogEvery::store_failures(),
            tasks,
        })
    }

    fn limits<'a>(
        &'a self,
        key: &'a str,
        org: Option<&'a str>,
    ) -> impl Iterator<Item = Limit<'a>> + 'a {
        let key = self
            .keys
            .get(key)
            .map(|(budget, shown)| ("key", key, shown.as_str(), budget));
        let org = org.and_then(|o| self.orgs.get(o).map(|budget| ("org", o, o, budget)));
        key.into_iter()
            .chain(org)
            .flat_map(|(scope, name, shown, budget)| {
                [
                    (Period::Day, budget.budget_daily_usd),
                    (Period::Month, budget.budget_monthly_usd),
                ]
                .into_iter()
                .filter_map(move |(period, usd)| {
                    Some(Limit {
                        scope,
                        name,
                        shown,
                        period,
                        usd: usd?,
                    })
                })
            })
    }

    /// The in-memory counter of a limit; `None` with Redis.
    fn memory_counter(&self, limit: &Limit<'_>) -> Option<&Mutex<(i64, f64)>> {
        let Store::Memory { keys, orgs, .. } = &self.store else {
            return None;
        };
        let subjects = if limit.scope == "key" { keys } else { orgs };
        subjects
            .get(limit.name)
            .map(|spend| spend.period(limit.period))
    }

    fn counter(limit: &Limit<'_>, now: SystemTime) -> String {
        format!(
            "{}:{}:{}:{}",
            limit.scope,
            limit.name,
            limit.period.as_str(),
            limit.period.name(now)
        )
    }

    /// Refuses a request whose key or org has spent a budget.
    pub async fn check(&self, key: &str, org: Option<&str>) -> Result<(), GatewayError> {
        if let Some(answer) = self.check_local(key, org) {
            return answer;
        }
        let now = self.clock.now();
        for limit in self.limits(key, org) {
            match self.spent(&limit, now).await {
                Some(spent) if spent >= limit.usd => return Err(self.refusal(&limit, spent, now)),
                Some(_) => {}
                None => {
                    if let Store::Redis {
                        on_error: OnRedisError::FailClosed,
                        ..
                    } = self.store
                    {
                        return Err(GatewayError::BudgetsUnavailable);
                    }
                }
            }
        }
        Ok(())
    }

    /// The check when budgets are in memory, answered without waiting;
    /// `None` when they are shared through Redis.
    pub fn check_local(&self, key: &str, org: Option<&str>) -> Option<Result<(), GatewayError>> {
        let Store::Memory { .. } = &self.store else {
            return None;
        };
        let now = self.clock.now();
        for limit in self.limits(key, org) {
            let spent = self.memory_spent(&limit, now);
            if spent >= limit.usd {
                return Some(Err(self.refusal(&limit, spent, now)));
            }
        }
        Some(Ok(()))
    }

    fn refusal(&self, limit: &Limit<'_>, spent: f64, now: SystemTime) -> GatewayError {
        self.metrics
            .budget_rejected
            .with_label_values(&[limit.scope])
            .inc();
        GatewayError::BudgetExhausted {
            what: format!(
                "{} budget of {} for {} `{}`",
                limit.period.as_str(),
                usd(limit.usd),
                limit.scope,
                limit.shown
            ),
            spent: usd(spent),
            resets_at: rfc3339(limit.period.end(now)),
        }
    }

    fn memory_spent(&self, limit: &Limit<'_>, now: SystemTime) -> f64 {
        let current = limit.period.index(now);
        self.memory_counter(limit)
            .and_then(|counter| counter.lock().ok().map(|c| *c))
            .map_or(
                0.0,
                |(period, spent)| if period == current { spent } else { 0.0 },
            )
    }

    /// `None` when the shared counter cannot be read (counted and logged).
    async fn spent(&self, limit: &Limit<'_>, now: SystemTime) -> Option<f64> {
        match &self.store {
            Store::Memory { .. } => Some(self.memory_spent(limit, now)),
            Store::Redis { redis, prefix, .. } => {
                let name = format!("{prefix}{}", Self::counter(limit, now));
                let value: Result<Option<f64>, _> = redis
                    .run(|mut m| async move { redis::AsyncCommands::get(&mut m, name).await })
                    .await;
                match value {
                    Ok(value) => Some(value.unwrap_or(0.0)),
                    Err(error) => {
                        self.metrics.budget_store_errors.inc();
                        if self.store_log.due() {
                            tracing::error!(%error, "cannot read a budget counter; applying redis.on_error");
                        }
                        None
                    }
                }
            }
        }
    }

    /// Spend against every configured budget, for `/admin/budgets`.
    pub async fn report(&self) -> Vec<serde_json::Value> {
        let now = self.clock.now();
        let mut subjects: Vec<(&'static str, &str, &str, &Budget)> = self
            .keys
            .iter()
            .map(|(id, (budget, shown))| ("key", id.as_str(), shown.as_str(), budget))
            .chain(
                self.orgs
                    .iter()
                    .map(|(name, budget)| ("org", name.as_str(), name.as_str(), budget)),
            )
            .collect();
        subjects.sort_by(|a, b| (a.0, a.2, a.1).cmp(&(b.0, b.2, b.1)));
        let mut report = Vec::new();
        for (scope, name, shown, budget) in subjects {
            for (period, usd) in [
                (Period::Day, budget.budget_daily_usd),
                (Period::Month, budget.budget_monthly_usd),
            ] {
                let Some(usd) = usd else { continue };
                let limit = Limit {
                    scope,
                    name,
                    shown,
                    period,
                    usd,
                };
                let spent = self.spent(&limit, now).await;
                let alerts_sent = self.alerts_sent(&limit, now).await;
                report.push(json!({
                    "scope": scope, "name": shown, "id": name, "period": period.as_str(),
                    "period_name": period.name(now), "budget_usd": usd,
                    // null while the shared counter cannot be read
                    "spent_usd": spent, "remaining_usd": spent.map(|spent| (usd - spent).max(0.0)),
                    "resets_at": rfc3339(period.end(now)),
                    "alerts_sent": alerts_sent,
                }));
            }
        }
        report
    }

    /// Adds a call's cost to every budget of its key and org, and raises the
    /// alerts it crosses, in place when budgets are in memory (`true`);
    /// shared budgets are left to `charge` (`false`).
    pub fn charge_local(&self, key: &str, org: Option<&str>, cost: f64) -> bool {
        let Store::Memory { state, .. } = &self.store else {
            return false;
        };
        if cost <= 0.0 {
            return true;
        }
        let now = self.clock.now();
        for limit in self.limits(key, org) {
            let Some(total) = self.memory_add(&limit, cost, now) else {
                continue;
            };
            for threshold in self.crossed(&limit, total - cost, total) {
                if state.first_in_period(&limit, threshold, now) {
                    self.alert(&limit, threshold, total, now);
                }
            }
        }
        true
    }

    /// Charges `cost` now when budgets are in memory, else in an owned
    /// task (shared budgets wait for Redis): never waits itself.
    pub fn bill(self: &Arc<Self>, key: Arc<str>, org: Option<Arc<str>>, cost: f64) {
        // In-memory counters never wait: charged in place, without a task.
        if self.charge_local(&key, org.as_deref(), cost) {
            return;
        }
        let budgets = self.clone();
        let charge = async move { budgets.charge(&key, org.as_deref(), cost).await };
        // Its failure's line belongs to the call that spent.
        self.tasks.spawn(charge.in_current_span());
    }

    /// `charge_local` for any store: shared budgets wait for Redis, so this
    /// runs off the request path.
    pub async fn charge(&self, key: &str, org: Option<&str>, cost: f64) {
        if self.charge_local(key, org, cost) || cost <= 0.0 {
            return;
        }
        let now = self.clock.now();
        for limit in self.limits(key, org) {
            let Some(total) = self.shared_add(&limit, cost, now).await else {
                continue;
            };
            for threshold in self.crossed(&limit, total - cost, total) {
                if self.first_time_shared(&limit, threshold, now).await {
                    self.alert(&limit, threshold, total, now);
                }
            }
        }
    }

    /// The alert thresholds whose alert was sent this period, as recorded
    /// when it was sent (in memory, or the shared marker in Redis); `None`
    /// while Redis cannot be read.
    async fn alerts_sent(&self, limit: &Limit<'_>, now: SystemTime) -> Option<Vec<f64>> {
        let thresholds = self.alerts.thresholds.iter().copied();
        match &self.store {
            Store::Memory { state, .. } => Some(
                thresholds
                    .filter(|threshold| state.sent_in_period(limit, *threshold, now))
                    .collect(),
            ),
            Store::Redis { .. } if self.alerts.thresholds.is_empty() => Some(Vec::new()),
            Store::Redis { redis, prefix, .. } => {
                let markers: Vec<String> = thresholds
                    .clone()
                    .map(|threshold| format!("{prefix}{}", Self::marker(limit, threshold, now)))
                    .collect();
                let found: Vec<Option<String>> = redis
                    .run(|mut m| async move {
                        redis::cmd("MGET").arg(&markers).query_async(&mut m).await
                    })
                    .await
                    .ok()?;
                let sent = thresholds.zip(found).filter(|(_, marker)| marker.is_some());
                Some(sent.map(|(threshold, _)| threshold).collect())
            }
        }
    }

    /// The alert thresholds a charge from `before` to `total` crosses.
    fn crossed<'a>(
        &'a self,
        limit: &'a Limit<'_>,
        before: f64,
        total: f64,
    ) -> impl Iterator<Item = f64> + 'a {
        self.alerts
            .thresholds
            .iter()
            .copied()
            .filter(move |threshold| {
                let line = limit.usd * threshold;
                before < line && total >= line
            })
    }

    fn memory_add(&self, limit: &Limit<'_>, cost: f64, now: SystemTime) -> Option<f64> {
        let current = limit.period.index(now);
        let mut counter = self.memory_counter(limit)?.lock().ok()?;
        if counter.0 != current {
            *counter = (current, 0.0);
        }
        counter.1 += cost;
        Some(counter.1)
    }

    async fn shared_add(&self, limit: &Limit<'_>, cost: f64, now: SystemTime) -> Option<f64> {
        let Store::Redis { redis, prefix, .. } = &self.store else {
            return None;
        };
        let name = format!("{prefix}{}", Self::counter(limit, now));
        let ttl = limit
            .period
            .end(now)
            .duration_since(now)
            .unwrap_or_default()
            + Duration::from_secs(86_400);
        let result: Result<f64, _> = redis
            .run(|mut m| async move {
                let total: f64 = redis::AsyncCommands::incr(&mut m, &name, cost).await?;
                let _: bool =
                    redis::AsyncCommands::expire(&mut m, &name, ttl.as_secs() as i64).await?;
                Ok(total)
            })
            .await;
        result
            .inspect_err(|error| {
                self.metrics.budget_store_errors.inc();
                if self.store_log.due() {
                    tracing::error!(%error, "cannot charge a budget counter; this spend is not counted");
                }
            })
            .ok()
    }

    /// An alert's marker: its subject, threshold and period.
    fn marker(limit: &Limit<'_>, threshold: f64, now: SystemTime) -> String {
        format!("{}:alert:{threshold}", Self::counter(limit, now))
    }

    /// Whether this threshold fires for the first time in this period
    /// across replicas.
    async fn first_time_shared(&self, limit: &Limit<'_>, threshold: f64, now: SystemTime) -> bool {
        let Store::Redis { redis, prefix, .. } = &self.store else {
            return false;
        };
        let name = format!("{prefix}{}", Self::marker(limit, threshold, now));
        let result: Result<Option<String>, _> = redis
            .run(|mut m| async move {
                redis::cmd("SET")
                    .arg(&name)
                    .arg(1)
                    .arg("NX")
                    .arg("EX")
                    .arg(40 * 86_400)
                    .query_async(&mut m)
                    .await
            })
            .await;
        matches!(result, Ok(Some(_)))
    }

    fn alert(&self, limit: &Limit<'_>, threshold: f64, spent: f64, now: SystemTime) {
        tracing::warn!(
            target: "sluice::budget",
            scope = limit.scope,
            name = limit.name,
            period = limit.period.as_str(),
            threshold,
            spent_usd = spent,
            budget_usd = limit.usd,
            "budget threshold reached"
        );
        self.metrics
            .budget_alerts
            .with_label_values(&[limit.scope])
            .inc();
        let Some(url) = self.alerts.webhook_url.clone() else {
            return;
        };
        let event = json!({
            "type": "budget_alert", "scope": limit.scope, "name": limit.name,
            "period": limit.period.as_str(), "period_name": limit.period.name(now),
            "threshold": threshold, "spent_usd": spent, "budget_usd": limit.usd,
            "at": rfc3339(now),
        });
        let (client, timeout) = (self.webhook.clone(), self.alerts.webhook_timeout);
        let body = event.to_string();
        self.tasks.spawn(async move {
            for attempt in 0..3u32 {
                let sent = client
                    .post(&url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .timeout(timeout)
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            tracing::error!(%url, "budget alert webhook failed after 3 attempts");
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::config::load_from_str;

    struct TestClock(Mutex<SystemTime>);

    impl Clock for TestClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn budgets(clock: Arc<TestClock>) -> (Budgets, Metrics) {
        let config = load_from_str(
            r#"
            [[deployments]]
            name = "m"
            provider = "mock"
            models = ["gpt-4o"]
            [[keys]]
            name = "team"
            key = "sk-team-000000"
            org = "eng"
            budget_daily_usd = 10.0
            [org_budgets.eng]
            budget_monthly_usd = 100.0
            "#,
            "t",
            &HashMap::new(),
        )
        .unwrap();
        let metrics = Metrics::new().unwrap();
        (
            Budgets::from_config(
                &config,
                &Arc::default(),
                clock,
                &Shared {
                    metrics: metrics.clone(),
                    tasks: Tasks::new(),
                    redis: None,
                },
            )
            .unwrap(),
            metrics,
        )
    }

    fn alerts(metrics: &Metrics, scope: &str) -> u64 {
        metrics.budget_alerts.with_label_values(&[scope]).get()
    }

    #[tokio::test]
    async fn thresholds_fire_once_spent_budgets_refuse_and_the_next_day_starts_fresh() {
        // 2026-11-22T10:20:00Z
        let clock = Arc::new(TestClock(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(1_795_343_200),
        )));
        let (budgets, metrics) = budgets(clock.clone());
        budgets.charge("team", Some("eng"), 4.0).await;
        assert_eq!(alerts(&metrics, "key"), 0);
        budgets.charge("team", Some("eng"), 1.5).await; // 55%: the 50% alert
        assert_eq!(alerts(&metrics, "key"), 1);
        budgets.charge("team", Some("eng"), 0.1).await; // still between 50% and 75%
        assert_eq!(alerts(&metrics, "key"), 1, "once per threshold");
        assert!(budgets.check("team", Some("eng")).await.is_ok());
        budgets.charge("team", Some("eng"), 5.0).await; // 106%: 75%, 90% and 100% at once
        assert_eq!(alerts(&metrics, "key"), 4);
        match budgets.check("team", Some("eng")).await {
            Err(GatewayError::BudgetExhausted {
                what, resets_at, ..
            }) => {
                assert_eq!(what, "daily budget of $10.00 for key `team`");
                assert_eq!(resets_at, "2026-11-23T00:00:00Z");
            }
            other => panic!("{other:?}"),
        }
        // The org's monthly budget saw the same spend: 10.6 of 100, no alert.
        assert_eq!(alerts(&metrics, "org"), 0);

        *clock.0.lock().unwrap() += Duration::from_secs(14 * 3600); // 2026-11-23T00:20Z
        assert!(
            budgets.check("team", Some("eng")).await.is_ok(),
            "a new day, a new budget"
        );
        budgets.charge("team", Some("eng"), 6.0).await;
        assert_eq!(alerts(&metrics, "key"), 5, "the new period alerts again");
    }
}
