//! invariantd: reads the databases of a microservice shop, evaluates declarative invariants
//! across them, and reports the keys that violate them.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod diag;
pub mod engine;
pub mod expr;
pub mod http;
pub mod metrics;
pub mod rules;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod value;
pub mod yaml;
