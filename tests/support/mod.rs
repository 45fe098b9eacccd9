//! Shared test support: Portcullis in-process (`in_process`) or as the built binary (`binary`),
//! one HTTP/TLS client (`http`), real external clients (`clients`: curl, openssl), hand-built
//! routing tables (`fixture`) over an in-memory PKI (`pki`), real backends, manifest YAML, the
//! mocked Kubernetes API, and condition waits.
//!
//! Each integration test file compiles this module separately and uses a subset of it.
#![allow(dead_code)]

pub mod backends;
pub mod binary;
pub mod clients;
pub mod fixture;
pub mod http;
pub mod in_process;
pub mod log_capture;
pub mod manifests;
pub mod mock_api;
pub mod pki;
pub mod wait;
