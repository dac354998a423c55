//! The endpoint: `GET /metrics` over HTTP/1, bounded against slow and
//! flooding clients.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

use super::{LOG_TARGET, Metrics};

/// Binds the metrics endpoint (at start, so a taken port fails the start).
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind metrics endpoint {listen}"))
}

/// Connections served at once; more are turned away (closed) at once. Far
/// above what scrapers need, so a flood must hold this many idle
/// connections, each for at most [`HEADER_TIMEOUT`], to delay a scrape.
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long one connection may last, however it is used.
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `GET /metrics` on `listener`. A slow client (headers dribbled in,
/// a response never read) and a flood of connections are bounded: at most
/// [`MAX_CONNECTIONS`] at once, headers within [`HEADER_TIMEOUT`], each
/// connection at most [`CONNECTION_TIMEOUT`].
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, "metrics accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: close it now rather than let it hold memory and a task.
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| respond(req, metrics.clone()));
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Err(e)) => tracing::debug!(target: LOG_TARGET, "metrics connection: {e}"),
                Err(_) => {
                    tracing::debug!(
                        target: LOG_TARGET,
                        "metrics connection: closed after {CONNECTION_TIMEOUT:?}"
                    )
                }
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    Ok(match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            // Reading many per-CPU counters blocks; keep it off the runtime.
            match tokio::task::spawn_blocking(move || metrics.render()).await {
                Ok(Ok(text)) => reply(200, "text/plain; version=0.0.4; charset=utf-8", text),
                Ok(Err(e)) => reply(500, "text/plain", format!("{e:#}\n")),
                Err(e) => reply(500, "text/plain", format!("{e}\n")),
            }
        }
        (&hyper::Method::GET, "/") => reply(
            200,
            "text/plain",
            "tollgate: metrics at /metrics\n".to_string(),
        ),
        _ => reply(404, "text/plain", "not found\n".to_string()),
    })
}
