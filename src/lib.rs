//! invariantd: reads the databases of a microservice shop, evaluates declarative invariants
//! across them, and reports the keys that violate them.

pub mod expr;
pub mod value;
pub mod diag;
pub mod yaml;
pub mod config;
pub mod rules;
