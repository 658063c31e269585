//! Placeholder module (pg e2e tests).
