//! The words of a repair's life: its states, what holds it for a person, the record as
//! stored, and how one attempt ended. Storage keeps them; `repair.rs` decides between them.

use crate::verdict::PlannedAction;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairState {
    Pending,
    DryRun,
    Approved,
    Applied,
    Failed,
    Skipped,
    Rejected,
    NeedsManual,
}

impl RepairState {
    pub const ALL: [RepairState; 8] = [
        RepairState::Pending,
        RepairState::DryRun,
        RepairState::Approved,
        RepairState::Applied,
        RepairState::Failed,
        RepairState::Skipped,
        RepairState::Rejected,
        RepairState::NeedsManual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepairState::Pending => "pending",
            RepairState::DryRun => "dry_run",
            RepairState::Approved => "approved",
            RepairState::Applied => "applied",
            RepairState::Failed => "failed",
            RepairState::Skipped => "skipped",
            RepairState::Rejected => "rejected",
            RepairState::NeedsManual => "needs_manual",
        }
    }

    pub fn parse(text: &str) -> Option<RepairState> {
        RepairState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Waiting for a person: approve or reject it.
    pub fn awaits_person(self) -> bool {
        matches!(self, RepairState::Pending | RepairState::DryRun)
    }
}

/// What holds a repair for a person (beside `mode: approve` itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// `run --dry-run`, `repairs.dry_run`, or the rule's `dry_run`.
    DryRun,
    /// The rule is new or changed since a person enabled its automatic repairs.
    NotEnabled,
    /// The run found more violations than `max_auto_per_run`.
    TooMany,
    /// A dataset suddenly returned nothing.
    Suspicious,
    /// Four eyes: approved once, waiting for a second person.
    FourEyes,
    /// The action could not be filled in for the key.
    Invalid,
}

impl Hold {
    pub const ALL: [Hold; 6] = [
        Hold::DryRun,
        Hold::NotEnabled,
        Hold::TooMany,
        Hold::Suspicious,
        Hold::FourEyes,
        Hold::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hold::DryRun => "dry_run",
            Hold::NotEnabled => "not_enabled",
            Hold::TooMany => "too_many",
            Hold::Suspicious => "suspicious",
            Hold::FourEyes => "four_eyes",
            Hold::Invalid => "invalid",
        }
    }

    pub fn parse(text: &str) -> Option<Hold> {
        Hold::ALL.into_iter().find(|h| h.as_str() == text)
    }

    /// A guardrail that stopped automatic repairs because the data looks wrong: on-call hears.
    pub fn alerts(self) -> bool {
        matches!(self, Hold::TooMany | Hold::Suspicious)
    }
}

/// A repair as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RepairRecord {
    pub id: i64,
    pub rule: String,
    pub key: String,
    pub occurrence_us: i64,
    pub state: RepairState,
    pub mode: String,
    pub action: String,
    pub actions: Vec<PlannedAction>,
    pub idempotency_key: String,
    pub hold_reason: Option<String>,
    pub held_by: Option<Hold>,
    pub created_us: i64,
    pub updated_us: i64,
    pub approved_by: Option<String>,
    /// Who rejected it.
    pub rejected_by: Option<String>,
    pub comment: Option<String>,
    pub attempts: i64,
    pub next_attempt_us: i64,
    pub lease_owner: Option<String>,
    pub lease_until_us: Option<i64>,
    pub fence: i64,
    /// An earlier claim ended without a result (its worker died or lost its lease while it
    /// may have been acting), and no attempt has acted since.
    pub interrupted: bool,
    pub result: Option<String>,
    pub finished_us: Option<i64>,
}

impl RepairRecord {
    /// The chosen action, filled in.
    pub fn chosen(&self) -> Option<&PlannedAction> {
        self.actions.iter().find(|a| a.name == self.action)
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum RepairEnd {
    /// Done for good, in this state (applied, failed, skipped, needs_manual).
    Final(RepairState, String),
    /// Applied, and the key's assertion holds now (judged without grace): the repair is
    /// `applied` and the violation it was planned for is resolved with it, by this repair.
    Repaired(String),
    /// Try again at this time; `acted` when this attempt acted (so it was not interrupted).
    Retry {
        at_us: i64,
        error: String,
        acted: bool,
    },
}

/// The hold reason of a repair that has its first of two approvals.
pub const SECOND_APPROVER: &str = "four eyes: approved once, waiting for a second person";
