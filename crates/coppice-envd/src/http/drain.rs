//! A request body that can be read to its end after its consumer is done with it.
//!
//! A server that answers before reading the whole request closes the connection instead of
//! keeping it, and a client still sending the last bytes (a multipart body's closing chunk,
//! or an upload refused half-way) then fails with a broken pipe instead of reading the
//! answer. The multipart parser stops at the closing boundary, so `/files` wraps its body in
//! a [`DrainableBody`] and reads what is left, within limits, before it answers.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Most bytes read after the consumer stopped; a client that sends more loses the connection.
const DRAIN_LIMIT: usize = 1 << 20;
/// Longest wait for the rest of a body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One request body, shared between its consumer and whoever drains it afterwards.
#[derive(Clone)]
pub struct DrainableBody(Arc<Mutex<BodyDataStream>>);

impl DrainableBody {
    /// Wraps `body`; returns the handle to drain it with and a body for the consumer.
    pub fn new(body: Body) -> (Self, Body) {
        let shared = Self(Arc::new(Mutex::new(body.into_data_stream())));
        let consumer = Body::from_stream(shared.clone());
        (shared, consumer)
    }

    /// Reads what the consumer left, up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIMEOUT`].
    pub async fn drain(mut self) {
        let mut seen = 0usize;
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(Ok(chunk)) = self.next().await {
                seen = seen.saturating_add(chunk.len());
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        })
        .await;
    }
}

impl std::fmt::Debug for DrainableBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainableBody")
    }
}

impl Stream for DrainableBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_drain_reads_what_the_consumer_left() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"head")),
            Ok(Bytes::from_static(b"tail")),
        ];
        let (drainable, consumer) =
            DrainableBody::new(Body::from_stream(futures_util::stream::iter(chunks)));
        let mut consumer = consumer.into_data_stream();
        assert_eq!(consumer.next().await.unwrap().unwrap(), "head");
        drop(consumer);
        let probe = drainable.clone();
        drainable.drain().await;
        let mut probe = probe;
        assert!(probe.next().await.is_none(), "the body was read to its end");
    }
}
