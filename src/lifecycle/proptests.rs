//! Random lives of one repair — people deciding, workers claiming, checking, acting, ending
//! attempts, stalling past their leases and crashing — driven through the pure transitions
//! with the storage rules `state` applies (a claim takes an approved, due, unleased repair and
//! bumps its fence; an end is written only under the claim's fence). Whatever happens: nothing
//! acts without the approvals it needs, a non-idempotent action never may have acted twice,
//! and a finished repair never changes again.

use proptest::prelude::*;

use super::approval::Refusal;
use super::repair::{
    Attempt, Check, Decision, after_action, applied, before_action, claimable, decide, ended,
};
use super::states::{RepairEnd, RepairRecord, RepairState};
use crate::verdict::{ActionSpec, PlannedAction};

const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];
const ACTIONS: [&str; 2] = ["reserve", "refund"];
const LEASE_US: i64 = 60_000_000;

#[derive(Debug, Clone)]
enum Event {
    Decide {
        person: usize,
        approve: bool,
        action: Option<usize>,
    },
    /// A worker claims after `wait_us` (long waits let leases run out).
    Claim { worker: usize, wait_us: i64 },
    /// The oldest (or newest) claim in flight works: checks the key, maybe acts, ends.
    Work {
        newest: bool,
        check: usize,
        outcome: usize,
        crash: Crash,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Crash {
    No,
    /// The worker dies while its action is in flight: it may have acted.
    DuringAction,
    /// The worker dies after acting, before its result is written.
    BeforeResult,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..3usize, any::<bool>(), proptest::option::of(0..2usize)).prop_map(
            |(person, approve, action)| Event::Decide {
                person,
                approve,
                action
            }
        ),
        (
            0..2usize,
            prop_oneof![
                Just(0i64),
                Just(2_000_000),
                Just(LEASE_US * 2),
                Just(3_600_000_000)
            ]
        )
            .prop_map(|(worker, wait_us)| Event::Claim { worker, wait_us }),
        (
            any::<bool>(),
            0..3usize,
            0..6usize,
            prop_oneof![
                Just(Crash::No),
                Just(Crash::No),
                Just(Crash::DuringAction),
                Just(Crash::BeforeResult)
            ]
        )
            .prop_map(|(newest, check, outcome, crash)| Event::Work {
                newest,
                check,
                outcome,
                crash
            }),
    ]
}

fn record() -> RepairRecord {
    RepairRecord {
        id: 1,
        rule: "paid_implies_reserved".into(),
        key: "42".into(),
        occurrence_us: 1,
        state: RepairState::Pending,
        mode: "approve".into(),
        action: ACTIONS[0].into(),
        actions: ACTIONS
            .iter()
            .map(|a| PlannedAction {
                name: a.to_string(),
                spec: ActionSpec::invalid(String::new()),
            })
            .collect(),
        idempotency_key: super::repair::idempotency_key(
            "paid_implies_reserved",
            "42",
            ACTIONS[0],
            1,
        ),
        hold_reason: None,
        held_by: None,
        created_us: 0,
        updated_us: 0,
        approved_by: None,
        rejected_by: None,
        comment: None,
        attempts: 0,
        next_attempt_us: 0,
        lease_owner: None,
        lease_until_us: None,
        fence: 0,
        interrupted: false,
        result: None,
        finished_us: None,
    }
}

/// A claim in flight: the repair as the worker read it, and its fence.
struct Claim {
    repair: RepairRecord,
    fence: i64,
    interrupted: bool,
}

fn final_state(s: RepairState) -> bool {
    !matches!(
        s,
        RepairState::Pending | RepairState::DryRun | RepairState::Approved
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_repair_acts_without_its_approvals_twice_or_after_it_ended(
        events in proptest::collection::vec(event(), 1..40),
        four_eyes: bool,
        idempotent: bool,
    ) {
        let mut repair = record();
        let mut now = 1_000i64;
        let mut claims: Vec<Claim> = Vec::new();
        // Every approval that went through, in order: (who, which action).
        let mut votes: Vec<(&str, String)> = Vec::new();
        let mut may_have_acted = 0u32;
        let mut finished: Option<RepairRecord> = None;
        for e in events {
            now += 1_000;
            match e {
                Event::Decide { person, approve, action } => {
                    let decision = Decision {
                        by: PEOPLE[person].into(),
                        approve,
                        action: action.map(|a| ACTIONS[a].to_string()),
                        comment: None,
                        four_eyes,
                    };
                    match decide(&repair, &decision, now) {
                        Ok(d) => {
                            prop_assert!(repair.state.awaits_person());
                            if approve {
                                votes.push((PEOPLE[person], d.action.clone()));
                            }
                            repair.state = d.state;
                            repair.approved_by = d.approved_by;
                            prop_assert_eq!(d.rejected_by.is_some(), !approve);
                            repair.rejected_by = d.rejected_by;
                            repair.hold_reason = d.hold_reason;
                            repair.held_by = d.held_by;
                            repair.action = d.action;
                            repair.idempotency_key = d.idempotency_key;
                            repair.finished_us = d.finished_us;
                            repair.next_attempt_us = now;
                        }
                        Err(Refusal::NotWaiting(s)) => prop_assert!(!s.awaits_person()),
                        Err(Refusal::SelfApproval) => prop_assert!(four_eyes),
                        Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
                    }
                }
                Event::Claim { worker, wait_us } => {
                    now += wait_us;
                    if claimable(&repair, now) {
                        // What the approvals must be for the action that will run.
                        let needed = if four_eyes { 2 } else { 1 };
                        let last: Vec<&(&str, String)> = votes.iter().rev().take(needed).collect();
                        prop_assert_eq!(last.len(), needed, "claimed without enough approvals");
                        prop_assert!(last.iter().all(|(_, a)| *a == repair.action));
                        if four_eyes {
                            prop_assert_ne!(last[0].0, last[1].0, "one person approved twice");
                        }
                        repair.interrupted |= repair.lease_owner.is_some();
                        repair.fence += 1;
                        repair.attempts += 1;
                        repair.lease_owner = Some(format!("worker-{worker}"));
                        repair.lease_until_us = Some(now + LEASE_US);
                        claims.push(Claim {
                            repair: repair.clone(),
                            fence: repair.fence,
                            interrupted: repair.interrupted,
                        });
                    }
                }
                Event::Work { newest, check, outcome, crash } => {
                    if claims.is_empty() {
                        continue;
                    }
                    let claim = if newest { claims.pop().unwrap() } else { claims.remove(0) };
                    let check = [Check::Holds, Check::Violated, Check::NotNow("down".into())][check].clone();
                    let r = &claim.repair;
                    let end = match before_action(check, claim.interrupted, idempotent, r.attempts, now) {
                        Some(end) => end,
                        None => {
                            prop_assert_eq!(r.state, RepairState::Approved);
                            // 0, 4 and 5 act, and find the key holding, still violated, or
                            // not to be judged after the action.
                            let attempt = [
                                Attempt::Applied("done".into()),
                                Attempt::Failed("refused".into()),
                                Attempt::Retry("503".into()),
                                Attempt::Ambiguous("no answer".into()),
                                Attempt::Applied("done".into()),
                                Attempt::Applied("done".into()),
                            ][outcome].clone();
                            if crash == Crash::DuringAction
                                || matches!(attempt, Attempt::Applied(_) | Attempt::Ambiguous(_))
                            {
                                may_have_acted += 1;
                            }
                            if !idempotent {
                                prop_assert!(may_have_acted <= 1, "a non-idempotent action may have acted twice");
                            }
                            if crash == Crash::DuringAction {
                                continue;
                            }
                            match attempt {
                                Attempt::Applied(said) => {
                                    let after = match outcome {
                                        0 => Check::Holds,
                                        4 => Check::Violated,
                                        _ => Check::NotNow("down".into()),
                                    };
                                    let holds = after == Check::Holds;
                                    let end = applied(said, after, "judged again later");
                                    // Only a key found holding resolves its violation.
                                    prop_assert_eq!(matches!(end, RepairEnd::Repaired(_)), holds);
                                    end
                                }
                                other => after_action(other, idempotent, r.attempts, 5, now),
                            }
                        }
                    };
                    if crash == Crash::BeforeResult {
                        continue;
                    }
                    if claim.fence != repair.fence {
                        continue; // a newer claim owns it: this result is not written
                    }
                    let e = ended(r, claim.interrupted, &end, now);
                    match &end {
                        RepairEnd::Final(state, _) => prop_assert_eq!(e.state, *state),
                        RepairEnd::Repaired(_) => prop_assert_eq!(e.state, RepairState::Applied),
                        RepairEnd::Retry { .. } => prop_assert!(!e.resolves),
                    }
                    prop_assert_eq!(e.resolves, matches!(end, RepairEnd::Repaired(_)));
                    repair.state = e.state;
                    repair.result = Some(e.result);
                    repair.next_attempt_us = e.next_attempt_us;
                    repair.finished_us = e.finished_us;
                    repair.interrupted = e.interrupted;
                    repair.lease_owner = None;
                    repair.lease_until_us = None;
                }
            }
            // Once finished, it stays as it ended.
            if let Some(f) = &finished {
                prop_assert_eq!(f, &repair, "a finished repair changed");
            } else if final_state(repair.state) {
                finished = Some(repair.clone());
            }
        }
    }
}
