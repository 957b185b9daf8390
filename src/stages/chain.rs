//! The one way to write a stage of the call pipeline (layers 5 to 9 of
//! `server::stack`; `crate::call` says what each one reads and adds).
//!
//! A stage is an async `call(request, next)`: work before, `next.run` (or an
//! answer without it), work on the response. The stages of a route are one
//! static chain, `(A, (B, (C, ())))`, run by one service ([`StageLayer`]):
//! per request it clones an `Arc` and the route's handler once (tower hands
//! the handler out by `&mut`, and the stages await before calling it) and
//! boxes one future for the whole chain. axum's `from_fn` instead clones the
//! whole inner stack and boxes two values at every layer. A stage whose
//! work is synchronous pays nothing for being async: its code is a state of
//! the chain's single future.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

/// One stage of the call pipeline.
pub trait Stage: Send + Sync + 'static {
    /// Runs the stage around `next`, the stages after it and the handler.
    fn call(&self, request: Request, next: impl Next) -> impl Future<Output = Response> + Send;
}

/// What follows a stage; run at most once.
pub trait Next: Send {
    fn run(self, request: Request) -> impl Future<Output = Response> + Send;
}

/// A stage that is not configured passes every call through.
impl<S: Stage> Stage for Option<S> {
    async fn call(&self, request: Request, next: impl Next) -> Response {
        match self {
            Some(stage) => stage.call(request, next).await,
            None => next.run(request).await,
        }
    }
}

/// A stage shared with the rest of its snapshot.
impl<S: Stage> Stage for Arc<S> {
    fn call(&self, request: Request, next: impl Next) -> impl Future<Output = Response> + Send {
        S::call(self, request, next)
    }
}

/// The stages of a route, outermost first, ending in `()`.
pub trait Stages: Send + Sync + 'static {
    fn run<H>(&self, request: Request, handler: H) -> impl Future<Output = Response> + Send
    where
        H: Service<Request, Response = Response, Error = Infallible> + Send,
        H::Future: Send;
}

impl Stages for () {
    async fn run<H>(&self, request: Request, handler: H) -> Response
    where
        H: Service<Request, Response = Response, Error = Infallible> + Send,
        H::Future: Send,
    {
        match handler.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

impl<A: Stage, R: Stages> Stages for (A, R) {
    fn run<H>(&self, request: Request, handler: H) -> impl Future<Output = Response> + Send
    where
        H: Service<Request, Response = Response, Error = Infallible> + Send,
        H::Future: Send,
    {
        self.0.call(
            request,
            Rest {
                stages: &self.1,
                handler,
            },
        )
    }
}

/// The stages after one, then the handler.
struct Rest<'a, R, H> {
    stages: &'a R,
    handler: H,
}

impl<R, H> Next for Rest<'_, R, H>
where
    R: Stages,
    H: Service<Request, Response = Response, Error = Infallible> + Send,
    H::Future: Send,
{
    fn run(self, request: Request) -> impl Future<Output = Response> + Send {
        self.stages.run(request, self.handler)
    }
}

/// The chain of the stages listed, outermost first: `chain![a, b]` is
/// `(a, (b, ()))`.
macro_rules! chain {
    () => { () };
    ($head:expr $(, $rest:expr)* $(,)?) => { ($head, $crate::stages::chain!($($rest),*)) };
}
pub(crate) use chain;

/// Runs a chain of stages in front of the handler it wraps.
pub struct StageLayer<P>(pub Arc<P>);

impl<P> Clone for StageLayer<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<P, H> Layer<H> for StageLayer<P> {
    type Service = Staged<P, H>;

    fn layer(&self, handler: H) -> Self::Service {
        Staged {
            stages: self.0.clone(),
            handler,
        }
    }
}

pub struct Staged<P, H> {
    stages: Arc<P>,
    handler: H,
}

impl<P, H: Clone> Clone for Staged<P, H> {
    fn clone(&self) -> Self {
        Self {
            stages: self.stages.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<P, H> Service<Request> for Staged<P, H>
where
    P: Stages,
    H: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    H::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.handler.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The handler made ready for this call goes with it.
        let clone = self.handler.clone();
        let handler = std::mem::replace(&mut self.handler, clone);
        let stages = self.stages.clone();
        Box::pin(async move { Ok(stages.run(request, handler).await) })
    }
}
