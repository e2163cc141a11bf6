//! The pure decisions behind approving repairs, which storage only applies: what one person's
//! approval does to a repair waiting for people (four eyes: two different people approving the
//! very action that runs) or to a rule version waiting to be enabled (the same, with the rule's
//! fingerprint as what is approved), and how many repairs enabling may approve at once.

/// Why a person's decision on a repair was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    /// It is not waiting for a person (already approved, applied, rejected…).
    NotWaiting(super::states::RepairState),
    /// Four eyes: the same person cannot give both approvals.
    SelfApproval,
    /// The rule offers no action of that name.
    UnknownAction(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotFound => f.write_str("no such repair"),
            Refusal::NotWaiting(s) => {
                write!(f, "the repair is {}, not waiting for approval", s.as_str())
            }
            Refusal::SelfApproval => f.write_str(
                "four eyes: you gave the first approval; a second person must give the other",
            ),
            Refusal::UnknownAction(a) => write!(f, "the repair offers no action `{a}`"),
        }
    }
}

/// One approval: who approved which action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approval {
    pub by: String,
    pub action: String,
}

/// What an approval does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The repair is approved: these people approved the action that will run.
    Approved(Vec<Approval>),
    /// Four eyes: this is the first approval of the action; the repair waits for a second
    /// person. `reset` is an earlier first approval of another action, which no longer counts.
    ApprovedOnce { reset: Option<Approval> },
}

/// What `by` approving `action` does to a repair whose first approval (under four eyes) is
/// `first`. Under four eyes the approval completes the repair only when another person already
/// approved the same action; approving another action starts over from this approval.
pub fn approve(
    first: Option<&Approval>,
    by: &str,
    action: &str,
    four_eyes: bool,
) -> Result<Step, Refusal> {
    let this = Approval {
        by: by.to_string(),
        action: action.to_string(),
    };
    if !four_eyes {
        return Ok(Step::Approved(vec![this]));
    }
    match first {
        Some(f) if f.action == action && f.by == by => Err(Refusal::SelfApproval),
        Some(f) if f.action == action => Ok(Step::Approved(vec![f.clone(), this])),
        Some(f) => Ok(Step::ApprovedOnce {
            reset: Some(f.clone()),
        }),
        None => Ok(Step::ApprovedOnce { reset: None }),
    }
}

/// What a path that promotes many repairs of a rule at once may do with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Promotion {
    /// Approve them all.
    Approve,
    /// Hold each for a person, for this reason (`too_many`): they are more than the rule may
    /// apply without one.
    TooMany(String),
}

/// Whether `count` repairs of a rule may be approved together by enabling it: never more than
/// `max_auto_per_run` at once, as for a run of the rule.
pub fn promote(count: usize, max_auto_per_run: u32) -> Promotion {
    if count > max_auto_per_run as usize {
        Promotion::TooMany(format!(
            "enabling would approve {count} repairs at once, more than max_auto_per_run \
             ({max_auto_per_run}): each waits for a person"
        ))
    } else {
        Promotion::Approve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order people approve in and whatever actions they pick, under four eyes a
        /// repair is approved only by two different people who both approved the action that
        /// runs; without four eyes, by the one who approved it.
        #[test]
        fn four_eyes_means_two_people_approved_the_action_that_runs(
            steps in proptest::collection::vec((0..3usize, 0..3usize), 1..12),
            four_eyes: bool,
        ) {
            let people = ["alice", "bob", "carol"];
            let actions = ["reserve", "refund", "log_only"];
            let mut first: Option<Approval> = None;
            for (p, a) in steps {
                match approve(first.as_ref(), people[p], actions[a], four_eyes) {
                    Ok(Step::Approved(approvals)) => {
                        prop_assert!(approvals.iter().all(|x| x.action == actions[a]));
                        if four_eyes {
                            prop_assert_eq!(approvals.len(), 2);
                            prop_assert_ne!(&approvals[0].by, &approvals[1].by);
                        } else {
                            prop_assert_eq!(approvals.len(), 1);
                        }
                        return Ok(());
                    }
                    Ok(Step::ApprovedOnce { reset }) => {
                        prop_assert!(four_eyes);
                        prop_assert_eq!(reset.as_ref(), first.as_ref());
                        first = Some(Approval { by: people[p].into(), action: actions[a].into() });
                    }
                    Err(refusal) => {
                        prop_assert_eq!(refusal, Refusal::SelfApproval);
                        let f = first.as_ref().expect("a refusal follows a first approval");
                        prop_assert_eq!(f.by.as_str(), people[p]);
                        prop_assert_eq!(f.action.as_str(), actions[a]);
                    }
                }
            }
        }

        /// Enabling never approves more repairs at once than the cap.
        #[test]
        fn promotion_keeps_the_cap(count in 0..500usize, cap in 0..50u32) {
            match promote(count, cap) {
                Promotion::Approve => prop_assert!(count <= cap as usize),
                Promotion::TooMany(_) => prop_assert!(count > cap as usize),
            }
        }
    }
}
