//! The sampling crate's error.

/// What can fail reading sampling state back, or checking a sampling configuration.
///
/// Configuration errors name the key they are about; their text is what the operator sees
/// (at start, and in a refused reload), e.g. `sampling.head.ratio: 2 is outside [0, 1]`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tail-decision WAL record whose framing is damaged.
    #[error("tail decision record: {0}")]
    DecisionRecord(&'static str),
    /// A tail-decision WAL record whose kept spans do not decode.
    #[error("tail decision record: {0}")]
    DecisionSpans(#[from] prost::DecodeError),
    /// A configuration value that is invalid: `key` names it (`sampling.head.ratio`,
    /// `policy "slow"`, `drop[0].metric`), `reason` says what is wrong with it.
    #[error("{key}: {reason}")]
    InvalidConfig { key: String, reason: String },
    /// A setting that must be positive (`sampling.tail.decision_wait_ms`).
    #[error("{key} must be > 0")]
    NotPositive { key: String },
    /// `sampling.tail.max_trace_age_ms` is shorter than `decision_wait_ms`.
    #[error(
        "sampling.tail.max_trace_age_ms ({max_trace_age_ms}) must be >= decision_wait_ms \
         ({decision_wait_ms})"
    )]
    TraceAgeBelowWait {
        max_trace_age_ms: u64,
        decision_wait_ms: u64,
    },
    /// A tail policy list with no policy in it.
    #[error("at least one policy is required")]
    NoPolicies,
    /// A metric-name or attribute glob that is empty.
    #[error("empty pattern")]
    EmptyPattern,
    /// A glob whose last character is an escaping `\`.
    #[error("{pattern:?}: ends with a lone \\")]
    LoneBackslash { pattern: String },
    /// A glob using a character reserved for syntax weft does not support (`[`, `{`).
    #[error(
        "{pattern:?}: {character:?} is not supported (only * and ? are special; \
         write \\{character} for the character itself)"
    )]
    UnsupportedGlobChar { pattern: String, character: char },
    /// An error inside one section of the configuration, prefixed with the section's name:
    /// `sampling.metrics: limits."x": must be > 0`. The inner error is part of this one's
    /// text (not a separate `source`), so the message reads the same however it is printed.
    #[error("{section}: {error}")]
    InSection { section: String, error: Box<Error> },
}

impl Error {
    /// An [`Error::InvalidConfig`].
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// This error, as one inside `section` (`sampling.metrics`, `include[1]`).
    pub(crate) fn in_section(self, section: impl Into<String>) -> Self {
        Error::InSection {
            section: section.into(),
            error: Box::new(self),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
