//! Behind layer 5 on the Files, Batch and async-polling routes: the owner
//! their handlers keep and check rows for (the caller's stable key id and
//! org), taken off the [`Call`] so the job store reads no call.
//!
//! [`Call`]: crate::call::Call

use axum::extract::Request;
use axum::response::Response;

use crate::call::Call;
use crate::engines::jobs::Owner;
use crate::stages::{Next, Stage};

pub struct JobOwner;

impl Stage for JobOwner {
    async fn call(&self, mut request: Request, next: impl Next) -> Response {
        if let Some(call) = request.extensions().get::<Call>() {
            let owner = Owner::of(&call.identity);
            request.extensions_mut().insert(owner);
        }
        next.run(request).await
    }
}
