//! `GET /admin/usage` (ledger totals as JSON or CSV) and `GET /admin/budgets`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};

use super::deployments::Views;
use crate::engines::ledger::StoreError;
use crate::vocab::error::{GatewayError, error_body, json_response, set_retry_after};

#[derive(serde::Deserialize)]
pub struct UsageQuery {
    #[serde(default = "default_group")]
    group_by: String,
    /// `YYYY-MM-DD` (UTC) or unix milliseconds; inclusive.
    from: Option<String>,
    /// `YYYY-MM-DD` (UTC, exclusive) or unix milliseconds.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn default_group() -> String {
    "key".to_owned()
}

/// Parses `2026-11-22` or unix milliseconds.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let parts: Vec<u32> = text
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day] = parts[..] else {
        return None;
    };
    crate::engines::metering::date_ms(i64::from(year), month, day)
}

/// `GET /admin/usage?group_by=key|org|model|deployment|tag|day&from=&to=&format=csv`
pub async fn usage(State(views): State<Views>, Query(query): Query<UsageQuery>) -> Response {
    let Some(ledger) = &views.ledger else {
        return GatewayError::invalid("The usage ledger is off ([usage] store = \"none\").", None)
            .into_response();
    };
    let bound = |text: &Option<String>, default: i64| match text {
        Some(text) => parse_time(text).ok_or(()),
        None => Ok(default),
    };
    let (Ok(from), Ok(to)) = (bound(&query.from, 0), bound(&query.to, i64::MAX)) else {
        return GatewayError::invalid(
            "`from` and `to` take YYYY-MM-DD or unix milliseconds.",
            Some("from"),
        )
        .into_response();
    };
    let totals = match ledger.store().totals(&query.group_by, from, to).await {
        Ok(totals) => totals,
        Err(error @ StoreError::UnknownGroup(_)) => {
            return GatewayError::invalid(error.to_string(), Some("group_by")).into_response();
        }
        Err(StoreError::Unavailable(error)) => return store_unavailable(&error),
    };
    if query.format.as_deref() == Some("csv") {
        let mut csv =
            String::from("group,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n");
        for t in &totals {
            let group = csv_cell(&t.group);
            csv.push_str(&format!(
                "\"{group}\",{},{},{},{},{:.6}\n",
                t.requests, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.cost_usd
            ));
        }
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/csv")], csv).into_response();
    }
    let body = serde_json::json!({"object": "list", "group_by": query.group_by, "data": totals});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// A text cell's content for a quoted CSV field. Group names come from
/// clients (tags, model names), so one starting like a formula (`=`, `+`,
/// `-`, `@`, or a tab or CR that some spreadsheets skip first) gets a
/// leading `'`, which spreadsheets show as text instead of evaluating.
fn csv_cell(text: &str) -> String {
    let quoted = text.replace('"', "\"\"");
    if quoted.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{quoted}")
    } else {
        quoted
    }
}

/// 503 while the usage store is unreachable: the caller may retry, unlike a
/// 400. The store's own error is logged, not returned (it may name hosts).
fn store_unavailable(error: &str) -> Response {
    tracing::warn!(%error, "usage report failed: the usage store is unreachable");
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_body(
            "The usage store is unreachable right now; please try again shortly.",
            "server_error",
            None,
            Some("usage_store_unavailable"),
        ),
    );
    set_retry_after(response.headers_mut(), std::time::Duration::from_secs(5));
    response
}

/// `GET /admin/budgets`: spend against each configured budget.
pub async fn budgets(State(views): State<Views>) -> Response {
    let data = match &views.budgets {
        Some(budgets) => budgets.report().await,
        None => Vec::new(),
    };
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(csv_cell("team-a"), "team-a");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"\"x\"\")");
        for text in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_cell(text).starts_with('\''), "{text:?}");
        }
    }
}
