//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (programs attached and the event loop
//! ticking).
//!
//! hyper 1 (HTTP/1 only): it is already in the build for the webhook client
//! (reqwest), so the server costs no new dependency, and it handles what a
//! hand-written responder would get wrong (pipelining, partial reads, slow
//! clients).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{output::events::Clock, output::metrics::Metrics};

/// The loop is not ready when it has not ticked for this long.
const STALE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("binding the metrics endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What `/readyz` reports: the event loop stamps it on every tick.
#[derive(Default, Debug)]
pub struct Readiness {
    /// Boot-time ns of the last tick; 0 until the agent is running.
    last_tick: AtomicU64,
}

impl Readiness {
    pub fn tick(&self) {
        self.last_tick.store(Clock::now_ktime().max(1), Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        let last = self.last_tick.load(Ordering::Relaxed);
        last != 0 && Clock::now_ktime().saturating_sub(last) < STALE.as_nanos() as u64
    }
}

pub struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    pub async fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(Self { listener })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub async fn serve(self, metrics: Metrics, ready: Arc<Readiness>) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let resp = respond(&req, &metrics, &ready);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    log::debug!("metrics endpoint: connection from {peer}: {e}");
                }
            });
        }
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, ready: &Readiness) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if ready.is_ready() => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n".into()),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
