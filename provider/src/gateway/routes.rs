//! The HTTP/2 entry point: routes each call to its service and refuses an
//! oversized request message as soon as its length prefix arrives.
//!
//! tonic's own limit answers `OutOfRange`; gRPC clients expect
//! `ResourceExhausted` for "message larger than max", and checking the prefix
//! here also means an oversized body is never buffered.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Frame, SizeHint};
use leasehold_proto::gateway::lease_server::{self, LeaseServer};
use leasehold_proto::gateway::provider_server::{self, ProviderServer};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Bytes, Service, http};

use super::service::{LeaseService, ProviderService};

/// gRPC length-prefixed message framing: 1 byte compression flag, 4 bytes
/// big-endian length.
const PREFIX_LEN: usize = 5;

/// Follows the length-prefixed messages of a request body and refuses any
/// message longer than the limit.
#[derive(Debug, Clone)]
struct MessageSizeGuard {
    max_message_bytes: usize,
    prefix: [u8; PREFIX_LEN],
    prefix_filled: usize,
    message_remaining: usize,
}

impl MessageSizeGuard {
    fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            prefix: [0; PREFIX_LEN],
            prefix_filled: 0,
            message_remaining: 0,
        }
    }

    fn observe(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.message_remaining > 0 {
                let skipped = self.message_remaining.min(data.len());
                self.message_remaining = self.message_remaining.saturating_sub(skipped);
                (_, data) = data.split_at(skipped);
                continue;
            }
            let wanted = PREFIX_LEN.saturating_sub(self.prefix_filled);
            let (head, rest) = data.split_at(wanted.min(data.len()));
            let end = self.prefix_filled.saturating_add(head.len());
            if let Some(slot) = self.prefix.get_mut(self.prefix_filled..end) {
                slot.copy_from_slice(head);
            }
            self.prefix_filled = end;
            data = rest;
            if self.prefix_filled == PREFIX_LEN {
                self.prefix_filled = 0;
                let [_compressed, length @ ..] = self.prefix;
                let declared = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
                if declared > self.max_message_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "request message of {declared} bytes exceeds the gateway's limit of {} bytes",
                        self.max_message_bytes
                    )));
                }
                self.message_remaining = declared;
            }
        }
        Ok(())
    }
}

/// A request body that fails with `ResourceExhausted` instead of delivering an
/// oversized message.
struct LimitedBody {
    inner: Body,
    guard: MessageSizeGuard,
    refused: bool,
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = this.guard.observe(data)
        {
            this.refused = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Both gateway services behind one HTTP/2 service.
#[derive(Clone)]
pub(crate) struct GatewayRoutes {
    lease: LeaseServer<LeaseService>,
    provider: ProviderServer<ProviderService>,
    max_message_bytes: usize,
}

impl GatewayRoutes {
    pub(crate) fn new(
        lease: LeaseService,
        provider: ProviderService,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            // tonic's limit stays as a backstop for decompressed sizes.
            lease: LeaseServer::new(lease).max_decoding_message_size(max_message_bytes),
            provider: ProviderServer::new(provider).max_decoding_message_size(max_message_bytes),
            max_message_bytes,
        }
    }
}

impl Service<http::Request<Body>> for GatewayRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let max_message_bytes = self.max_message_bytes;
        let request = request.map(|inner| {
            Body::new(LimitedBody {
                inner,
                guard: MessageSizeGuard::new(max_message_bytes),
                refused: false,
            })
        });
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .map(|(service, _method)| service);
        match service {
            Some(lease_server::SERVICE_NAME) => self.lease.call(request),
            Some(provider_server::SERVICE_NAME) => self.provider.call(request),
            _ => {
                let path = request.uri().path().to_owned();
                Box::pin(async move {
                    Ok(Status::unimplemented(format!("no gateway method at {path}")).into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(len: u32) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&len.to_be_bytes());
        frame
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_chunking() {
        let mut body = framed(3);
        body.extend_from_slice(b"abc");
        body.extend(framed(10));
        body.extend_from_slice(&[7; 10]);
        for chunk_size in 1..=body.len() {
            let mut guard = MessageSizeGuard::new(10);
            for chunk in body.chunks(chunk_size) {
                guard.observe(chunk).unwrap();
            }
            assert_eq!((guard.prefix_filled, guard.message_remaining), (0, 0));
        }
    }

    #[test]
    fn oversized_message_is_refused_at_its_prefix_even_when_split() {
        // The payload bytes of a small first message must not be read as a prefix.
        let mut body = framed(4);
        body.extend_from_slice(&[0xff; 4]);
        body.extend(framed(11));
        for chunk_size in 1..=body.len() {
            let mut guard = MessageSizeGuard::new(10);
            let outcome: Result<Vec<()>, Status> = body
                .chunks(chunk_size)
                .map(|chunk| guard.observe(chunk))
                .collect();
            let status = outcome.unwrap_err();
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status.message().contains("11 bytes"),
                "{}",
                status.message()
            );
        }
    }
}
