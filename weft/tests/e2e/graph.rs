//! Placeholder module (graph e2e tests).
