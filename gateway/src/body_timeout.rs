//! `http.body_read_timeout`: every request body must arrive whole within a deadline counted from
//! its header, so a sender that trickles a body cannot hold a connection (and its reserved bytes)
//! for long.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// The error a body read meets past its deadline; [`is_body_timeout`] recognises it.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within http.body_read_timeout ({0:?})")]
pub(crate) struct BodyTimeout(Duration);

/// Whether an error from reading a body (anywhere in its source chain) is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes. Data already
/// received is always delivered first, so a handler that reads late is not penalised.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router behind a per-request body deadline.
#[derive(Clone)]
pub(crate) struct BodyDeadline {
    app: Router,
    limit: Duration,
}

impl BodyDeadline {
    pub(crate) fn new(app: Router, limit: Duration) -> Self {
        Self { app, limit }
    }
}

impl tower::Service<Request<Incoming>> for BodyDeadline {
    type Response = <Router as tower::Service<Request<Body>>>::Response;
    type Error = <Router as tower::Service<Request<Body>>>::Error;
    type Future = <Router as tower::Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<Request<Body>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let limit = self.limit;
        let req = req.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(limit)),
                limit,
            })
        });
        self.app.call(req)
    }
}
