//! The label sets of the series that are not per rule, and the bounded values some labels
//! take.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabel {
    pub(super) source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReceiverOutcome {
    pub(super) receiver: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReplicaLabel {
    pub(super) replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    pub(super) kind: String,
}

/// The outcomes of a delivery attempt, each with a series from start-up.
pub(super) const DELIVERY_OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildInfo {
    pub(super) version: String,
}

/// How a repair can end.
pub(super) const REPAIR_OUTCOMES: [&str; 5] =
    ["applied", "failed", "skipped", "rejected", "needs_manual"];

/// Why a guardrail held a run's automatic repairs (`state::Hold`, those a run decides).
pub(super) const HELD_REASONS: [&str; 4] = ["dry_run", "not_enabled", "too_many", "suspicious"];

/// The statuses of `rule_keys`: what the last finished run did with each key.
pub(super) const KEY_STATUSES: [&str; 3] = ["judged", "in_grace", "error"];
