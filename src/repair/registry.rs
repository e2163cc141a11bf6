//! The one place that knows every kind of repair action: building the action a rule's
//! configuration describes, and saying what a planned repair will do. A new kind is its own
//! file (beside `sql.rs`, `http.rs`, `publish.rs`) and one arm in each function here.

use std::sync::Arc;

use super::action::{Action, Clients};
use crate::rules::ActionKind;
use crate::sources::Sources;
use crate::verdict::ActionSpec;

/// The action a rule's configuration describes.
pub fn build<'a>(
    kind: &'a ActionKind,
    sources: &'a Sources,
    clients: &'a Arc<Clients>,
) -> Box<dyn Action + 'a> {
    match kind {
        ActionKind::Sql {
            source,
            statement,
            expect_rows,
            ..
        } => Box::new(super::sql::Sql {
            source: sources.get(source).cloned(),
            source_name: source,
            statement,
            expect_rows: *expect_rows,
        }),
        ActionKind::Http {
            method,
            headers,
            on_409,
            on_422,
            ..
        } => Box::new(super::http::Http {
            client: &clients.http,
            method,
            headers,
            on_409: *on_409,
            on_422: *on_422,
        }),
        ActionKind::Publish { url, .. } => Box::new(super::publish::Publish { clients, url }),
    }
}

/// What an action will do, as an approver reads it: the statement and its parameters, the
/// request, or the event — the rule's fixed parts with this repair's values.
pub fn describe(kind: &ActionKind, spec: &ActionSpec) -> String {
    match (kind, spec) {
        (
            ActionKind::Sql {
                source, statement, ..
            },
            ActionSpec::Sql { params },
        ) => super::sql::describe(source, statement, params),
        (ActionKind::Http { method, .. }, ActionSpec::Http { url, body }) => {
            super::http::describe(method, url, body)
        }
        (ActionKind::Publish { .. }, ActionSpec::Publish { subject, payload }) => {
            super::publish::describe(subject, payload)
        }
        (_, ActionSpec::Invalid { error }) => format!("cannot be filled in: {error}"),
        (kind, spec) => format!(
            "planned as {spec:?}, but the rule's action is now a {} action",
            kind.kind_name()
        ),
    }
}
