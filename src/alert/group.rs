//! Which alert group an observation belongs to: its kind and the rule or source it is about.
//! Stored and sent as text (`violation/RULE`, `unknown/RULE`, `stale/RULE`,
//! `repairs_held/RULE`, `source_down/SOURCE`); read back into this type at the boundary.

use crate::notification::AlertKind;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub kind: AlertKind,
    /// The rule, or for `source_down` the source.
    pub name: String,
}

impl GroupKey {
    pub fn new(kind: AlertKind, name: &str) -> GroupKey {
        GroupKey {
            kind,
            name: name.to_string(),
        }
    }

    /// A stored key as text. A key without a kind (written before kinds were part of it) or
    /// with a kind this version does not know is a rule's violations.
    pub fn parse(text: &str) -> GroupKey {
        match text.split_once('/') {
            Some((kind, name)) => match AlertKind::parse(kind) {
                Some(kind) => GroupKey::new(kind, name),
                None => GroupKey::new(AlertKind::Violation, name),
            },
            None => GroupKey::new(AlertKind::Violation, text),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written_and_old_keys_are_violations() {
        for kind in AlertKind::ALL {
            let key = GroupKey::new(kind, "paid_implies_reserved");
            assert_eq!(GroupKey::parse(&key.to_string()), key);
        }
        assert_eq!(
            GroupKey::parse("paid_implies_reserved"),
            GroupKey::new(AlertKind::Violation, "paid_implies_reserved")
        );
    }
}
