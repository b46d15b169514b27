//! The body of every answer as the connection sends it: the app's or the shield's, passed
//! through unchanged. With the access log on it also carries the answer's [`AccessRecord`],
//! counts the body bytes as they stream, and hands the record to the access log when the answer
//! ends: its last frame taken, or the body dropped (the client went away, the connection was
//! cut). So each answer that left `finish` makes exactly one access line, written when it is
//! over. With the access log off, it carries nothing and each frame costs one branch.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};

use crate::proxy::respond;
use crate::telemetry::access::{AccessLog, AccessRecord};

/// An answer's body on its way out.
pub(crate) struct SentBody {
    inner: respond::Body,
    /// The access log and the answer's record, until it is handed over.
    access: Option<(AccessLog, Box<AccessRecord>)>,
}

impl SentBody {
    /// `inner`, with the access record to write when it ends (`None`: the access log is off).
    pub(crate) fn new(
        inner: respond::Body,
        access: Option<(AccessLog, Box<AccessRecord>)>,
    ) -> SentBody {
        SentBody { inner, access }
    }

    /// Hands the record over (once), `complete` when the body went out to its end.
    fn hand_over(&mut self, complete: bool) {
        if let Some((log, mut record)) = self.access.take() {
            // A HEAD answer's body is never sent (hyper drops it unread): it went out whole.
            record.complete = complete || record.method == Method::HEAD;
            log.write(record);
        }
    }
}

impl Body for SentBody {
    type Data = Bytes;
    type Error = <respond::Body as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some((_, record)) = &mut this.access {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        record.bytes += data.len() as u64;
                    }
                }
                Poll::Ready(None) => this.hand_over(true),
                // The app's body broke off: the client got less than the app meant to send.
                Poll::Ready(Some(Err(_))) => this.hand_over(false),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for SentBody {
    fn drop(&mut self) {
        if self.access.is_some() {
            // hyper drops a body once it knows the end was sent (`is_end_stream`) without
            // asking for the end; any other drop is an answer cut short.
            let complete = self.inner.is_end_stream();
            self.hand_over(complete);
        }
    }
}
