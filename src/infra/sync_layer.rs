//! The outer layers' middleware (request ids, request metrics, encoding
//! checks, the matched route), whose work before the inner service is
//! synchronous. Unlike axum's
//! `from_fn`, which clones the whole inner stack and boxes two values per
//! request, it calls the inner service in place and returns an unboxed
//! future. The stages of a call are written as `crate::stages::Stage`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::vocab::error::GatewayError;

pub trait Middleware: Clone + Send + Sync + 'static {
    /// What `before` hands to `after`.
    type Carry: Send + 'static;

    /// `Err` answers without calling the inner service, once what is left
    /// of a small request body is drained (boxed: refusals are the rare path).
    fn before(&self, request: &mut Request) -> Result<Self::Carry, Box<Response>>;

    /// Sees the inner service's response head.
    fn after(carry: Self::Carry, response: &mut Response);
}

#[derive(Clone)]
pub struct SyncLayer<M>(pub M);

impl<M: Clone, S> Layer<S> for SyncLayer<M> {
    type Service = SyncService<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        SyncService {
            middleware: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct SyncService<M, S> {
    middleware: M,
    inner: S,
}

impl<M, S> Service<Request> for SyncService<M, S>
where
    M: Middleware,
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = SyncFuture<S::Future, M::Carry>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.middleware.before(&mut request) {
            Ok(carry) => SyncFuture::calling(self.inner.call(request), Some((carry, M::after))),
            Err(response) => SyncFuture::refused(Box::pin(crate::util::drain::refuse_after_drain(
                request, *response,
            ))),
        }
    }
}

/// What to run on the response, with what `before` carried.
type After<C> = Option<(C, fn(C, &mut Response))>;

/// A refusal's answer, given once the request body is drained.
type Refusal = Pin<Box<dyn Future<Output = Response> + Send>>;

pin_project! {
    /// The inner service's future and what runs on its response, or an
    /// answer given without calling it.
    #[project = Projected]
    pub enum SyncFuture<F, C> {
        Calling {
            #[pin]
            inner: F,
            after: After<C>,
        },
        Refused { answer: Option<Refusal> },
    }
}

impl<F, C> SyncFuture<F, C> {
    fn calling(inner: F, after: After<C>) -> Self {
        Self::Calling { inner, after }
    }

    fn refused(answer: Refusal) -> Self {
        Self::Refused {
            answer: Some(answer),
        }
    }
}

impl<F, C, E> Future for SyncFuture<F, C>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Calling { inner, after } => {
                let mut result = ready!(inner.poll(cx));
                if let (Ok(response), Some((carry, after))) = (&mut result, after.take()) {
                    after(carry, response);
                }
                Poll::Ready(result)
            }
            Projected::Refused { answer } => match answer {
                Some(pending) => {
                    let response = ready!(pending.as_mut().poll(cx));
                    *answer = None;
                    Poll::Ready(Ok(response))
                }
                // Polled again after completing: a caller's bug, answered, not a panic.
                None => Poll::Ready(Ok(GatewayError::Internal.into_response())),
            },
        }
    }
}
