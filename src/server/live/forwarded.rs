//! Metering of batches a provider ran on its own (`batch = "upstream"`):
//! no line passed the pipeline, so the usage the provider reports is priced,
//! charged to the key's budgets, counted and recorded in the ledger here,
//! once, by the replica that closed the batch.

use std::sync::Arc;

use super::Live;
use crate::engines::internal::{BATCH_TAG, ForwardedUsage};
use crate::engines::ledger::UsageRecord;

pub fn meter(live: &Live, work: ForwardedUsage) {
    let snapshot = live.snapshot();
    let discount = live
        .registries
        .jobs
        .as_ref()
        .map_or(0.0, |jobs| jobs.batch.upstream_discount);
    let cost = snapshot.pricing.cost(&work.model, &work.usage) * (1.0 - discount);
    live.registries
        .metrics
        .record_usage(&work.model, &work.deployment, &work.usage, cost);
    // A revoked key's batch is still billed and recorded: under its stable
    // id, and to the org the batch was made in.
    let identity = snapshot.keys.by_id(&work.key_id);
    let key_id: Arc<str> = work.key_id.as_str().into();
    let name = identity
        .as_ref()
        .map_or(key_id.clone(), |key| key.name.clone());
    let org: Option<Arc<str>> = work.org.as_deref().map(Arc::from);
    if let Some(budgets) = &snapshot.budgets {
        budgets.bill(key_id.clone(), org.clone(), cost);
    }
    let Some(ledger) = &live.registries.ledger else {
        return;
    };
    let model: Arc<str> = work.model.as_str().into();
    ledger.record(UsageRecord {
        at_ms: crate::engines::metering::unix_ms(),
        request_id: work.batch_id.clone(),
        key: name,
        key_id,
        org,
        model_requested: model.clone(),
        model,
        deployment: Some(work.deployment.as_str().into()),
        priority: crate::config::Priority::Batch.as_str(),
        tag: Some(format!("{BATCH_TAG}:{}", work.batch_id)),
        prompt_tokens: work.usage.prompt_tokens as i64,
        completion_tokens: work.usage.completion_tokens as i64,
        cached_tokens: work.usage.cached_tokens as i64,
        cost_usd: cost,
        status: 200,
        ..UsageRecord::default()
    });
}
