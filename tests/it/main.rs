//! Integration tests against real PostgreSQL, MariaDB and SQLite: one test binary, each test
//! in databases of its own.

mod alerts;
mod architecture;
mod auth;
mod checks;
mod cli;
mod conformance;
mod daemon;
mod deploy;
mod edges;
mod faults;
mod fuzz;
mod harness;
mod http_limits;
mod incremental;
mod init;
mod metrics_http;
mod notify;
mod reads;
mod reload;
mod repairs;
mod replicas;
mod rule_tests;
mod shop;
mod state;
mod thresholds;
mod wake;
mod web;
