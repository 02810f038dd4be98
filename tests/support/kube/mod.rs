//! A stand-in for the Kubernetes API server (being written).
#![allow(dead_code)]
