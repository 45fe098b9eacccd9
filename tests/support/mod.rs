//! Shared test helpers. Each test binary uses only some of them.
#![allow(dead_code)]

pub mod portcullis;
pub mod wait;
