//! Repairs: planning one per violation occurrence after a run (`plan`), with the guardrails
//! that decide whether it may be applied by itself or waits for a person; and applying them
//! (`worker`): claim with a lease, check the key again, act once through the rule's action
//! (its kind in `actions`), check again, record — each transition with its audit entry, in the
//! state store's transaction. `explain` gathers the evidence for one key that an approver
//! decides on.

mod explain;
mod plan;
mod worker;

pub use explain::{Evidence, evidence};
pub use plan::{Guardrails, Planned, idempotency_key, plan, suspicious};
pub use worker::{Check, RepairEnv, Worked, check_key, work};
