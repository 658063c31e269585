//! Membership: placeholder, being written.
