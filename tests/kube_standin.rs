//! Self-tests of the Kubernetes API stand-in (being written).
