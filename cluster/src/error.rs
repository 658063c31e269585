//! The cluster crate's error.

/// What can fail setting up membership.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("membership: {0}")]
    Membership(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
