//! The pure decisions of a repair's life, below storage so that `state` only applies them
//! inside its transactions and the worker and the API only ask them: a person's decision
//! (approve, reject, four eyes), what one attempt's outcome makes of the repair (applied,
//! retried, failed, needs_manual, skipped), and the shared retry policy. Property tests drive
//! random sequences of decisions, claims, attempts and crashes through them.
//!
//! The files, in the order they use each other: `states` (the words), `approval` (four eyes
//! and caps, also for enabling a rule), `backoff`, `repair` (the transitions).

pub mod approval;
pub mod backoff;
#[cfg(test)]
mod proptests;
pub mod repair;
pub mod states;
