//! A batch as stored, and as the API shows it (with counts and usage summed
//! from its recorded lines).

use serde_json::{Value as Json, json};

use super::super::JobsError;
use super::super::Owner;
use crate::infra::sql::{Db, Row, Value};

/// The batch's state; the API's `status` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validating => "validating",
            Self::Failed => "failed",
            Self::InProgress => "in_progress",
            Self::Finalizing => "finalizing",
            Self::Completed => "completed",
            Self::Expired => "expired",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::Validating,
            Self::Failed,
            Self::InProgress,
            Self::Finalizing,
            Self::Completed,
            Self::Expired,
            Self::Cancelling,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether a runner still has work to do on it.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Self::Validating | Self::InProgress | Self::Finalizing | Self::Cancelling
        )
    }
}

/// The columns `Batch::from_row` reads, in order.
pub const COLUMNS: &str = "id, owner, org, status, endpoint, input_file_id, completion_window, \
     metadata, output_expires_after, model, total, errors, output_file_id, error_file_id, \
     created_at, in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at, \
     cancelling_at, cancelled_at, upstream_deployment, upstream_batch_id, trace_parent, \
     upstream_completed, \
     upstream_failed, upstream_input_tokens, upstream_output_tokens, upstream_cached_tokens";

#[derive(Debug, Clone)]
pub struct Batch {
    pub id: String,
    pub owner: String,
    pub org: Option<String>,
    pub status: Status,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    /// The metadata object as JSON text.
    pub metadata: Option<String>,
    pub output_expires_after: Option<i64>,
    pub model: Option<String>,
    pub total: i64,
    /// The `errors` list's `data` as JSON text.
    pub errors: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    /// The deployment a forwarded batch went to (`batch = "upstream"`).
    pub upstream_deployment: Option<String>,
    /// The provider's id for it, once created there.
    pub upstream_batch_id: Option<String>,
    /// The `traceparent` of the call that created it, when Sluice traced
    /// that call: each line's span links to it.
    pub trace_parent: Option<String>,
    /// Counts and usage kept on the row, shown instead of summing the line
    /// results: the provider's for a forwarded batch (mirrored while it
    /// runs), the final ones once a batch closed here. Stored in the
    /// `upstream_*` columns, named for their first use.
    pub recorded_counts: Option<Counts>,
}

impl Batch {
    pub fn from_row(row: Row) -> Option<Self> {
        let mut values = row.into_iter();
        let mut next = || values.next().unwrap_or(Value::Null);
        Some(Self {
            id: next().into_text()?,
            owner: next().into_text()?,
            org: next().into_text(),
            status: Status::parse(next().text()?)?,
            endpoint: next().into_text()?,
            input_file_id: next().into_text()?,
            completion_window: next().into_text()?,
            metadata: next().into_text(),
            output_expires_after: next().int(),
            model: next().into_text(),
            total: next().int()?,
            errors: next().into_text(),
            output_file_id: next().into_text(),
            error_file_id: next().into_text(),
            created_at: next().int()?,
            in_progress_at: next().int(),
            expires_at: next().int()?,
            finalizing_at: next().int(),
            completed_at: next().int(),
            failed_at: next().int(),
            expired_at: next().int(),
            cancelling_at: next().int(),
            cancelled_at: next().int(),
            upstream_deployment: next().into_text(),
            upstream_batch_id: next().into_text(),
            trace_parent: next().into_text(),
            recorded_counts: next().int().map(|completed| Counts {
                completed,
                failed: next().int().unwrap_or(0),
                input_tokens: next().int().unwrap_or(0),
                output_tokens: next().int().unwrap_or(0),
                cached_tokens: next().int().unwrap_or(0),
            }),
        })
    }

    /// The stored values, in `COLUMNS` order.
    pub fn to_values(&self) -> Vec<Value> {
        vec![
            self.id.as_str().into(),
            self.owner.as_str().into(),
            self.org.clone().into(),
            self.status.as_str().into(),
            self.endpoint.as_str().into(),
            self.input_file_id.as_str().into(),
            self.completion_window.as_str().into(),
            self.metadata.clone().into(),
            self.output_expires_after.into(),
            self.model.clone().into(),
            self.total.into(),
            self.errors.clone().into(),
            self.output_file_id.clone().into(),
            self.error_file_id.clone().into(),
            self.created_at.into(),
            self.in_progress_at.into(),
            self.expires_at.into(),
            self.finalizing_at.into(),
            self.completed_at.into(),
            self.failed_at.into(),
            self.expired_at.into(),
            self.cancelling_at.into(),
            self.cancelled_at.into(),
            self.upstream_deployment.clone().into(),
            self.upstream_batch_id.clone().into(),
            self.trace_parent.clone().into(),
            self.recorded_counts.map(|counts| counts.completed).into(),
            self.recorded_counts.map(|counts| counts.failed).into(),
            self.recorded_counts
                .map(|counts| counts.input_tokens)
                .into(),
            self.recorded_counts
                .map(|counts| counts.output_tokens)
                .into(),
            self.recorded_counts
                .map(|counts| counts.cached_tokens)
                .into(),
        ]
    }

    /// The OpenAI `batch` object, with its recorded counts when it has them
    /// (forwarded or closed), else `counts`.
    pub fn to_json(&self, counts: &Counts) -> Json {
        let counts = self.recorded_counts.as_ref().unwrap_or(counts);
        let parse = |text: &Option<String>| {
            text.as_deref()
                .and_then(|text| serde_json::from_str::<Json>(text).ok())
        };
        let errors = parse(&self.errors).map(|data| json!({"object": "list", "data": data}));
        json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.as_str(),
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": counts.completed,
                "failed": counts.failed,
            },
            "usage": {
                "input_tokens": counts.input_tokens,
                "input_tokens_details": {"cached_tokens": counts.cached_tokens},
                "output_tokens": counts.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": counts.input_tokens + counts.output_tokens,
            },
            "metadata": parse(&self.metadata),
        })
    }

    pub fn visible_to(&self, owner: &Owner, share_with_org: bool) -> bool {
        owner.sees(&self.owner, self.org.as_deref(), share_with_org)
    }
}

/// What a batch's recorded lines add up to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub completed: i64,
    pub failed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
}

/// The row's columns that keep `Batch::recorded_counts`, in `Counts` order.
const RECORDED_COLUMNS: [&str; 5] = [
    "upstream_completed",
    "upstream_failed",
    "upstream_input_tokens",
    "upstream_output_tokens",
    "upstream_cached_tokens",
];

impl Counts {
    /// `SET` assignments that keep counts on the row, with parameters
    /// numbered from `$first`; `values` gives them.
    pub fn assignments(first: usize) -> String {
        let assigned: Vec<String> = RECORDED_COLUMNS
            .iter()
            .enumerate()
            .map(|(offset, column)| format!("{column} = ${}", first + offset))
            .collect();
        assigned.join(", ")
    }

    /// The parameters of `assignments`, in order.
    pub fn values(&self) -> [Value; 5] {
        [
            self.completed.into(),
            self.failed.into(),
            self.input_tokens.into(),
            self.output_tokens.into(),
            self.cached_tokens.into(),
        ]
    }
}

/// Sums a batch's recorded lines.
pub async fn counts(db: &Db, batch_id: &str) -> Result<Counts, JobsError> {
    let rows = db
        .query(
            "SELECT failed, COUNT(*), CAST(SUM(input_tokens) AS BIGINT), \
             CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cached_tokens) AS BIGINT) \
             FROM sluice_batch_results WHERE batch_id = $1 GROUP BY failed",
            vec![batch_id.into()],
        )
        .await?;
    let mut counts = Counts::default();
    for row in rows {
        let number = |index: usize| row.get(index).and_then(Value::int).unwrap_or(0);
        if number(0) == 0 {
            counts.completed = number(1);
        } else {
            counts.failed = number(1);
        }
        counts.input_tokens += number(2);
        counts.output_tokens += number(3);
        counts.cached_tokens += number(4);
    }
    Ok(counts)
}

/// The batch with `id`, whoever owns it.
pub async fn load(db: &Db, id: &str) -> Result<Option<Batch>, JobsError> {
    let row = db
        .query_one(
            &format!("SELECT {COLUMNS} FROM sluice_batches WHERE id = $1"),
            vec![id.into()],
        )
        .await?;
    Ok(row.and_then(Batch::from_row))
}
