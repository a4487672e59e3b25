//! Vigil's middleware, as one tower layer around every route of the API: each request counted
//! and timed ([`metrics::Tracking`]), and refused before its route runs when it must be
//! ([`super::refused`]: an encoded NUL in the URI, a read without its token).
//!
//! A layer of its own rather than `axum::middleware::from_fn`: `from_fn` clones the rest of the
//! router into a new box for every request and runs it through `Next`, a third of what the
//! middleware cost a heartbeat. Here the checks are synchronous, so the route's service is
//! called in `call`, where tower has just found it ready, and only the answer is awaited.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};

use super::metrics;
use crate::app::App;

#[derive(Clone)]
pub(crate) struct ApiLayer {
    app: Arc<App>,
}

impl ApiLayer {
    pub(crate) fn new(app: Arc<App>) -> ApiLayer {
        ApiLayer { app }
    }
}

impl<S> tower::Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> ApiService<S> {
        ApiService {
            app: self.app.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct ApiService<S> {
    app: Arc<App>,
    inner: S,
}

impl<S> tower::Service<Request> for ApiService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let app = self.app.clone();
        if metrics::logging_requests() {
            // Request logging on: the request runs in its span ([`metrics::tracked`]), which
            // needs the route's service in the future. The ready one goes there, a clone stays.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return Box::pin(async move {
                let checks = app.clone();
                let response = metrics::tracked(&app, request, |request| async move {
                    match super::refused(&checks, &request) {
                        Some(err) => err.into_response(),
                        None => inner.call(request).await.unwrap_or_else(|e| match e {}),
                    }
                })
                .await;
                Ok(response)
            });
        }
        let tracking = metrics::Tracking::start(&app, &request);
        let answer = match super::refused(&app, &request) {
            Some(err) => Either::Left(std::future::ready(Ok(err.into_response()))),
            None => Either::Right(self.inner.call(request)),
        };
        Box::pin(async move {
            let response = answer.await.unwrap_or_else(|e| match e {});
            Ok(tracking.finish(&app, response))
        })
    }
}
