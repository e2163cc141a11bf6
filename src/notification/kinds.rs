//! What an alert is about (`AlertKind`: a rule failing, or the checker's own blindness) and
//! what an announcement of it says happened (`Event`): the names routes match on, receivers
//! label with and the outbox stores.

/// What an alert is about: `violation` (a rule failing) and the checker's own blindness.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Violation,
    Unknown,
    Stale,
    SourceDown,
    RepairsHeld,
}

impl AlertKind {
    pub const ALL: [AlertKind; 5] = [
        AlertKind::Violation,
        AlertKind::Unknown,
        AlertKind::Stale,
        AlertKind::SourceDown,
        AlertKind::RepairsHeld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Violation => "violation",
            AlertKind::Unknown => "unknown",
            AlertKind::Stale => "stale",
            AlertKind::SourceDown => "source_down",
            AlertKind::RepairsHeld => "repairs_held",
        }
    }

    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Every kind's name, for messages.
    pub fn names() -> String {
        AlertKind::ALL.map(AlertKind::as_str).join(", ")
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a group's announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The group started failing.
    Firing,
    /// Still failing, `repeat_interval` after the last announcement.
    Repeat,
    /// Still failing, with more violations than last announced.
    Grown,
    /// No longer failing.
    Resolved,
    /// Still failing, at a higher severity than announced (a rule's `error_if` crossed), or
    /// now routed to receivers it had not told (a route's `min_impact` reached).
    Escalated,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Firing => "firing",
            Event::Repeat => "repeat",
            Event::Grown => "grown",
            Event::Resolved => "resolved",
            Event::Escalated => "escalated",
        }
    }
}
