//! The sampling crate's error.

/// What can fail reading sampling state back.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tail-decision WAL record whose framing is damaged.
    #[error("tail decision record: {0}")]
    DecisionRecord(&'static str),
    /// A tail-decision WAL record whose kept spans do not decode.
    #[error("tail decision record: {0}")]
    DecisionSpans(#[from] prost::DecodeError),
}
