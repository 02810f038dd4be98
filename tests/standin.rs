//! Self-tests of the GitHub stand-in (`support::github`).
