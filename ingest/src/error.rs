//! The ingest crate's own errors. What an ingest node answers its clients is
//! [`weft_receiver::Error`]; these are failures inside the forwarding path.

/// A collector node's client could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The member's gRPC address is not a valid URI authority.
    #[error("bad grpc address {addr:?}: {error}")]
    BadGrpcAddress {
        addr: String,
        error: tonic::transport::Error,
    },
}
