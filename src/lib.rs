//! invariantd: reads the databases of a microservice shop, evaluates declarative invariants
//! across them, and reports the keys that violate them.
//!
//! Data flows one way, and a module imports only those before it in this list:
//! `value`, `diag`, `yaml`, `verdict` (vocabulary) → `lifecycle` (pure repair transitions) →
//! `outbound` (where invariantd may send) → `notification` (what an announcement says) →
//! `receivers` (each with its config and wire format) → `config` → `expr` → `sources` →
//! `actions` (repair action kinds, each with its config) → `rules` → `engine` → `scheduler` →
//! `state` → `health` → `metrics` → `alert` → `repair` → `api` → `auth` → `context` → `http` →
//! `daemon` → `cli` → `telemetry`, `report`, `rule_tests`, `demo`, `init` → `app` (the only
//! wiring).
//! See the README's architecture section.

pub mod actions;
pub mod alert;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod daemon;
pub mod demo;
pub mod diag;
pub mod engine;
pub mod expr;
pub mod health;
pub mod http;
pub mod init;
pub mod lifecycle;
pub mod metrics;
pub mod notification;
pub mod outbound;
pub mod receivers;
pub mod repair;
pub mod report;
pub mod rule_tests;
pub mod rules;
pub mod scheduler;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod value;
pub mod verdict;
pub mod yaml;
