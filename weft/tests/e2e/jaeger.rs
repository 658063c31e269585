//! Placeholder module (jaeger e2e tests).
