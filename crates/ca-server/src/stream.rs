//! A listing of any length as one JSON array, read and sent a page at a time: the
//! answer of `GET /v1/devices` without `limit` or `cursor` (the form the versions before
//! paging gave). The server holds at most a page and the chunks in flight, whatever the
//! fleet's size; the client still reads one array.
//!
//! The first page is read before the answer starts, so that a refusal (a bad filter, the
//! database down) is still a status code with its sentence. A failure after that cannot
//! change the status any more: the body ends with an error, the connection is cut, and the
//! client sees an unfinished array rather than a short list that looks whole.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use mtlsgate_authority::Page;
use serde::Serialize;
use tokio::sync::mpsc;

/// Chunks waiting to be sent: the next page is read while these go out.
const IN_FLIGHT: usize = 2;

/// What the body's stream carries: a chunk of the array, or why it stops short.
type Chunk = Result<Bytes, std::io::Error>;

/// The body of a streamed array: the chunks from the task that reads the pages.
pub(crate) struct ArrayBody(mpsc::Receiver<Chunk>);

impl futures_core::Stream for ArrayBody {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// Starts sending `first` and the pages after it, each read by `next(cursor)`, as one
/// JSON array; returns the body to answer with.
pub(crate) fn array<T, E, F, Fut>(first: Page<T>, mut next: F) -> ArrayBody
where
    T: Serialize + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, E>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        let mut page = first;
        let mut started = false;
        loop {
            let chunk = match encode(&page.items, !started, page.next.is_none()) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx
                        .send(Err(cut(format!("a row cannot be written: {e}"))))
                        .await;
                    return;
                }
            };
            started = true;
            if tx.send(Ok(chunk)).await.is_err() {
                return; // the client went away
            }
            let Some(cursor) = page.next.take() else {
                return;
            };
            page = match next(cursor).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("a listing stopped part-way: {e}");
                    let _ = tx
                        .send(Err(cut(format!("the listing stopped part-way: {e}"))))
                        .await;
                    return;
                }
            };
        }
    });
    ArrayBody(rx)
}

fn cut(why: String) -> std::io::Error {
    std::io::Error::other(why)
}

/// One page's part of the array: `[` before the first, `,` between rows, `]` after the last.
fn encode<T: Serialize>(items: &[T], first: bool, last: bool) -> serde_json::Result<Bytes> {
    let mut out = Vec::with_capacity(items.len() * 256 + 2);
    if first {
        out.push(b'[');
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, item)?;
    }
    if last {
        out.push(b']');
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of `rows`, `size` a page, cursors being the next row's index.
    fn page(rows: &[u32], from: usize, size: usize) -> Page<u32> {
        let end = (from + size).min(rows.len());
        Page {
            items: rows[from..end].to_vec(),
            next: (end < rows.len()).then(|| end.to_string()),
        }
    }

    async fn collect(mut body: ArrayBody) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        while let Some(c) = body.0.recv().await {
            match c {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn pages_make_one_array_with_every_row_once() {
        for (n, size) in [(0, 3), (1, 3), (3, 3), (7, 3), (10, 1), (10, 10)] {
            let rows: Vec<u32> = (0..n).collect();
            let all = rows.clone();
            let body = array(page(&rows, 0, size), move |c: String| {
                let all = all.clone();
                async move {
                    let from: usize = c.parse().map_err(|_| "bad cursor".to_string())?;
                    Ok::<_, String>(page(&all, from, size))
                }
            });
            let (bytes, err) = collect(body).await;
            assert_eq!(err, None);
            let back: Vec<u32> = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{n}/{size}: {e}: {}", String::from_utf8_lossy(&bytes)));
            assert_eq!(back, rows, "{n} rows, {size} a page");
        }
    }

    #[tokio::test]
    async fn a_failure_part_way_ends_the_body_with_an_error_not_a_closed_array() {
        let rows: Vec<u32> = (0..7).collect();
        let body = array(page(&rows, 0, 3), |_c: String| async move {
            Err::<Page<u32>, _>("the database went away")
        });
        let (bytes, err) = collect(body).await;
        assert_eq!(bytes, b"[0,1,2");
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("the database went away")),
            "{err:?}"
        );
        assert!(serde_json::from_slice::<Vec<u32>>(&bytes).is_err());
    }
}
