//! A repair's transitions as pure functions: what a person's decision does to it (`decide`),
//! whether a claimed repair may act (`before_action`), what an action's outcome makes of it
//! (`after_action`), and what ending an attempt writes (`ended`). Storage reads the row, asks
//! here, and writes the answer in the same transaction; nothing here reads a clock or a
//! database.

use sha2::{Digest, Sha256};

use super::approval::{Approval, Refusal, Step, approve};
use super::backoff::next_attempt_us;
use super::states::{Hold, RepairEnd, RepairRecord, RepairState, SECOND_APPROVER};

/// A person's decision on a repair waiting for one.
#[derive(Debug, Clone)]
pub struct Decision {
    pub by: String,
    pub approve: bool,
    /// The action the approver picked, if not the planned one.
    pub action: Option<String>,
    pub comment: Option<String>,
    /// Two different people must approve.
    pub four_eyes: bool,
}

/// What a decision writes: the repair's new fields and its audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub state: RepairState,
    pub approved_by: Option<String>,
    /// The person who rejected it, on a rejection.
    pub rejected_by: Option<String>,
    pub hold_reason: Option<String>,
    pub held_by: Option<Hold>,
    pub action: String,
    pub idempotency_key: String,
    pub finished_us: Option<i64>,
    pub audit_action: &'static str,
    pub details: serde_json::Value,
}

/// The key a target deduplicates one repair's action on: the same for every attempt of the
/// same action for the same occurrence of the violation, different for anything else.
pub fn idempotency_key(rule: &str, key: &str, action: &str, occurrence_us: i64) -> String {
    let mut h = Sha256::new();
    for field in [rule, key, action, &occurrence_us.to_string()] {
        h.update(field.len().to_string().as_bytes());
        h.update(b":");
        h.update(field.as_bytes());
    }
    format!("invariantd-{}", crate::value::hex(&h.finalize()[..16]))
}

/// What `decision` does to `current`, or why it is refused. Under four eyes the first
/// approval is kept (in `approved_by`, with the action it approved as the repair's action)
/// while the repair waits for the second; picking another action gives it that action's
/// idempotency key.
pub fn decide(
    current: &RepairRecord,
    decision: &Decision,
    now_us: i64,
) -> Result<Decided, Refusal> {
    if !current.state.awaits_person() {
        return Err(Refusal::NotWaiting(current.state));
    }
    let (action, idempotency_key) = match &decision.action {
        Some(name) => {
            if !current.actions.iter().any(|a| &a.name == name) {
                return Err(Refusal::UnknownAction(name.clone()));
            }
            let key = idempotency_key(&current.rule, &current.key, name, current.occurrence_us);
            (name.clone(), key)
        }
        None => (current.action.clone(), current.idempotency_key.clone()),
    };
    let mut details =
        serde_json::json!({ "comment": decision.comment, "from": current.state.as_str() });
    let decided = |state, approved_by, hold_reason, held_by, audit_action, details| Decided {
        state,
        approved_by,
        rejected_by: (state == RepairState::Rejected).then(|| decision.by.clone()),
        hold_reason,
        held_by,
        action: action.clone(),
        idempotency_key: idempotency_key.clone(),
        finished_us: (state == RepairState::Rejected).then_some(now_us),
        audit_action,
        details,
    };
    if !decision.approve {
        return Ok(decided(
            RepairState::Rejected,
            current.approved_by.clone(),
            current.hold_reason.clone(),
            current.held_by,
            "repair.rejected",
            details,
        ));
    }
    let first = current
        .approved_by
        .clone()
        .filter(|_| current.held_by == Some(Hold::FourEyes))
        .map(|by| Approval {
            by,
            action: current.action.clone(),
        });
    Ok(
        match approve(first.as_ref(), &decision.by, &action, decision.four_eyes)? {
            Step::Approved(approvals) => {
                let names: Vec<&str> = approvals.iter().map(|a| a.by.as_str()).collect();
                details["approvals"] = serde_json::json!(approvals);
                decided(
                    RepairState::Approved,
                    Some(names.join(", ")),
                    None,
                    None,
                    "repair.approved",
                    details,
                )
            }
            Step::ApprovedOnce { reset } => {
                if let Some(reset) = reset {
                    details["reset"] = serde_json::json!(reset);
                }
                decided(
                    current.state,
                    Some(decision.by.clone()),
                    Some(SECOND_APPROVER.to_string()),
                    Some(Hold::FourEyes),
                    "repair.approved_once",
                    details,
                )
            }
        },
    )
}

/// What the rule says about one key now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Holds,
    Violated,
    /// It cannot be judged now (a source down, the key within its grace): why.
    NotNow(String),
}

/// What one try of an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Done; what the target answered.
    Applied(String),
    /// Not done, and trying again will not help (the target refused it).
    Failed(String),
    /// Not done; trying again later may work (the target is down, busy, or answered 5xx).
    Retry(String),
    /// Sent, and no answer came: it may have been done.
    Ambiguous(String),
}

/// Whether a claimed repair may act, from what the rule says of its key just before: `None`
/// to act, or how this attempt ends without acting. `interrupted` says an earlier claim ended
/// without a result while it may have been acting: a non-idempotent action then never runs
/// again by itself.
pub fn before_action(
    check: Check,
    interrupted: bool,
    idempotent: bool,
    attempts: i64,
    now_us: i64,
) -> Option<RepairEnd> {
    Some(match check {
        Check::Holds if interrupted => RepairEnd::Final(
            RepairState::Applied,
            "an earlier attempt was interrupted while acting; the invariant holds now (that attempt, or something else, repaired it)".into(),
        ),
        Check::Holds => RepairEnd::Final(
            RepairState::Skipped,
            "the invariant holds again for this key: nothing to do".into(),
        ),
        // Tries again later without giving up: the key cannot be judged now, which says
        // nothing about the action.
        Check::NotNow(why) => RepairEnd::Retry {
            at_us: next_attempt_us(attempts, now_us),
            error: format!("cannot check the key before acting: {why}"),
            acted: false,
        },
        Check::Violated if interrupted && !idempotent => RepairEnd::Final(
            RepairState::NeedsManual,
            "an earlier attempt was interrupted while acting and the key still violates the rule; the action is not marked idempotent, so a person must look".into(),
        ),
        Check::Violated => return None,
    })
}

/// How an attempt that acted ends: applied and failed are final; a retryable failure waits
/// its backoff until `max_attempts`; an answer that never came is retried only for an
/// idempotent action, and is a person's to look at otherwise.
pub fn after_action(
    attempt: Attempt,
    idempotent: bool,
    attempts: i64,
    max_attempts: u32,
    now_us: i64,
) -> RepairEnd {
    let retry = |error: String| {
        if attempts >= i64::from(max_attempts) {
            return RepairEnd::Final(
                RepairState::Failed,
                format!("{error} (gave up after {attempts} attempts)"),
            );
        }
        RepairEnd::Retry {
            at_us: next_attempt_us(attempts, now_us),
            error,
            acted: true,
        }
    };
    match attempt {
        Attempt::Applied(said) => RepairEnd::Final(RepairState::Applied, said),
        Attempt::Failed(why) => RepairEnd::Final(RepairState::Failed, why),
        Attempt::Retry(why) => retry(why),
        Attempt::Ambiguous(why) if idempotent => retry(why),
        Attempt::Ambiguous(why) => RepairEnd::Final(
            RepairState::NeedsManual,
            format!("{why}; it may have been applied, and the action is not marked idempotent"),
        ),
    }
}

/// How an applied action ends, from what the rule says of the key right after it, judged
/// without grace (the action itself just changed the key): holding, the violation is resolved
/// by the repair; otherwise it stays open, and `again` says when the rule judges it next.
pub fn applied(said: String, after: Check, again: &str) -> RepairEnd {
    match after {
        Check::Holds => RepairEnd::Repaired(format!(
            "{said}; the invariant holds now: the violation is resolved by this repair"
        )),
        Check::Violated => RepairEnd::Final(
            RepairState::Applied,
            format!(
                "{said}; the key still violates the rule after the action: the violation stays open, {again}"
            ),
        ),
        Check::NotNow(why) => RepairEnd::Final(
            RepairState::Applied,
            format!(
                "{said}; the key could not be checked after the action ({why}): the violation stays open, {again}"
            ),
        ),
    }
}

/// What ending an attempt of `repair` (claimed with `interrupted`) writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub state: RepairState,
    pub result: String,
    pub next_attempt_us: i64,
    pub finished_us: Option<i64>,
    /// Still true when this attempt did not act after an interrupted one: the next attempt
    /// must still treat the repair as possibly done.
    pub interrupted: bool,
    pub audit_action: String,
    pub details: serde_json::Value,
    /// A final end, counted in `invariantd_repairs_total`.
    pub counted: bool,
    /// The repair's violation is resolved with it (`repair #ID`).
    pub resolves: bool,
}

pub fn ended(repair: &RepairRecord, interrupted: bool, end: &RepairEnd, now_us: i64) -> Ended {
    let done = |state: RepairState, result: &String, resolves: bool| {
        let mut details = serde_json::json!({ "result": result, "attempt": repair.attempts, "idempotency_key": repair.idempotency_key });
        if resolves {
            details["resolved"] = serde_json::json!(format!("repair #{}", repair.id));
        }
        Ended {
            state,
            result: result.clone(),
            next_attempt_us: repair.next_attempt_us,
            finished_us: Some(now_us),
            interrupted: false,
            audit_action: format!("repair.{}", state.as_str()),
            details,
            counted: true,
            resolves,
        }
    };
    match end {
        RepairEnd::Final(state, result) => done(*state, result, false),
        RepairEnd::Repaired(result) => done(RepairState::Applied, result, true),
        RepairEnd::Retry {
            at_us,
            error,
            acted,
        } => Ended {
            state: RepairState::Approved,
            result: error.clone(),
            next_attempt_us: *at_us,
            finished_us: None,
            interrupted: interrupted && !acted,
            audit_action: "repair.retry".to_string(),
            details: serde_json::json!({ "error": error, "attempt": repair.attempts, "next_attempt_us": at_us }),
            counted: false,
            resolves: false,
        },
    }
}

/// Whether a worker may claim `repair` at `now_us`: approved, due, and not leased to another.
pub fn claimable(repair: &RepairRecord, now_us: i64) -> bool {
    repair.state == RepairState::Approved
        && repair.next_attempt_us <= now_us
        && repair.lease_until_us.is_none_or(|until| until < now_us)
}
