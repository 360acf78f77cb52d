//! Lease calls whose request arrives already encoded and signed: the market server relays a
//! browser's call this way. The bytes go out exactly as they came, because the signature
//! covers them and any re-encoding (field order, defaults, unknown fields) could change them;
//! replies are decoded into the generated types so that the relay can show them as JSON.

use std::marker::PhantomData;

use prost::bytes::BufMut as _;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstDecoder;

/// Sends pre-encoded request bytes; decodes replies as `U`.
#[derive(Debug)]
pub struct PassThroughCodec<U>(PhantomData<U>);

impl<U> Default for PassThroughCodec<U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// Writes the request bytes unchanged.
#[derive(Debug, Default)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for PassThroughCodec<U> {
    type Encode = Vec<u8>;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::default()
    }
}

/// A `Lease` client that forwards pre-encoded, pre-signed requests: it adds no credentials
/// of its own, so the provider checks the original signer's signature as usual.
#[derive(Debug, Clone)]
pub struct RelayClient {
    inner: tonic::client::Grpc<Channel>,
}

impl RelayClient {
    /// Over a channel from [`crate::tls::connect`], the one pinned transport.
    pub fn new(channel: Channel) -> Self {
        Self {
            // The caller bounds the body; the provider enforces its own limit.
            inner: tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("gateway connection not ready: {e}")))
    }

    fn request(body: Vec<u8>, metadata: MetadataMap) -> Request<Vec<u8>> {
        let mut request = Request::new(body);
        *request.metadata_mut() = metadata;
        request
    }

    /// Calls the unary method at `path` (a full gRPC path such as
    /// [`crate::auth::methods::GET_STATUS`]) with `body` and `metadata` as given.
    pub async fn unary<U: prost::Message + Default + Send + 'static>(
        &mut self,
        path: &'static str,
        body: Vec<u8>,
        metadata: MetadataMap,
    ) -> Result<U, Status> {
        self.ready().await?;
        let response = self
            .inner
            .unary(
                Self::request(body, metadata),
                PathAndQuery::from_static(path),
                PassThroughCodec::<U>::default(),
            )
            .await?;
        Ok(response.into_inner())
    }

    /// Starts the server-streaming method at `path`, as [`Self::unary`].
    pub async fn server_streaming<U: prost::Message + Default + Send + 'static>(
        &mut self,
        path: &'static str,
        body: Vec<u8>,
        metadata: MetadataMap,
    ) -> Result<Streaming<U>, Status> {
        self.ready().await?;
        let response = self
            .inner
            .server_streaming(
                Self::request(body, metadata),
                PathAndQuery::from_static(path),
                PassThroughCodec::<U>::default(),
            )
            .await?;
        Ok(response.into_inner())
    }
}
