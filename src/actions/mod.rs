//! Repair action kinds, one file each (`sql`, `http`, `publish`). A kind owns its whole life:
//! its configuration shape and checks (against the rule's scope, with file, line and column),
//! compiling its templates for a run and filling them in for one key (`Fill`), describing a
//! planned action to an approver, and applying it once. The rule format picks a kind by its
//! key through the externally tagged `RawKind` that the `kinds!` list below makes: adding a
//! kind is its file, one `mod` line and one line in that list.

mod check;
mod clients;
mod http;
mod publish;
mod sql;
mod template;

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use check::{Checker, RawAction};
pub use clients::Clients;
pub use http::{Http, StatusMeaning, public_result};
pub use publish::Publish;
pub use sql::Sql;

use crate::diag::Diagnostics;
use crate::expr::{Env, Scope};
use crate::lifecycle::repair::Attempt;
use crate::sources::Sources;
use crate::verdict::ActionSpec;
use crate::yaml::Shape;

/// One of a rule's actions, as its `repair:` section configures it.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub kind: Arc<dyn ActionKind>,
    /// Safe to repeat after an ambiguous failure (a timeout, a connection reset): the target
    /// deduplicates by the idempotency key, or the statement is conditional.
    pub idempotent: bool,
}

/// A configured action of one kind. Its `Debug` form is part of the rule's fingerprint: keep
/// it stable.
pub trait ActionKind: Debug + Send + Sync {
    /// The key that selects the kind in a rule (`sql`).
    fn kind(&self) -> &'static str;
    /// Where its requests go, when it sends any: checked against `outbound.allow` at load.
    fn target_url(&self) -> Option<&str> {
        None
    }
    /// Compiles its templates against a run's scope (the columns the queries really return).
    /// `what` names the action in messages.
    fn compile(&self, scope: &Scope<'_>, what: &str) -> Result<Box<dyn Fill>, Vec<String>>;
    /// What a planned action of this kind will do, as an approver reads it.
    fn describe(&self, spec: &ActionSpec) -> Result<String, String>;
    /// Acts once for one repair, with the values filled in for its key.
    fn apply<'a>(
        &'a self,
        to: &'a Targets<'a>,
        spec: &'a ActionSpec,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Attempt>;
    /// For tests that read a kind's configuration.
    fn as_any(&self) -> &dyn Any;
}

/// An action's templates compiled for one run: fills them in for one violating key.
pub trait Fill: Debug + Send + Sync {
    fn fill(&self, env: &Env<'_>) -> Result<ActionSpec, String>;
}

/// What actions act on: the sources (for SQL) and the outbound clients.
pub struct Targets<'a> {
    pub sources: &'a Sources,
    pub clients: &'a Clients,
}

/// A kind's configuration as read from the rule's YAML.
trait Configure: DeserializeOwned {
    /// Its shape, for finding unknown fields.
    fn shape() -> Shape;
    /// Checks it; `ctx` names the action in messages.
    fn check(
        self,
        c: &Checker<'_>,
        ctx: &str,
        diags: &mut Diagnostics,
    ) -> Option<Arc<dyn ActionKind>>;
}

macro_rules! kinds {
    ($($name:ident => $raw:ty),* $(,)?) => {
        /// A kind's configuration, picked by its key.
        #[derive(Debug, serde::Deserialize)]
        #[allow(non_camel_case_types)]
        pub(crate) enum RawKind {
            $($name($raw)),*
        }

        /// The keys of an action: its kind, and whether it is idempotent.
        const FIELDS: &[&str] = &[$(stringify!($name),)* "idempotent"];

        impl RawKind {
            fn check(
                self,
                c: &Checker<'_>,
                ctx: &str,
                diags: &mut Diagnostics,
            ) -> Option<Arc<dyn ActionKind>> {
                match self {
                    $(RawKind::$name(raw) => raw.check(c, ctx, diags)),*
                }
            }

            fn shapes() -> Vec<(&'static str, Shape)> {
                vec![$((stringify!($name), <$raw as Configure>::shape())),*]
            }
        }
    };
}

// The kinds a rule's action may be: `key => its configuration`, in the order they are named in
// messages. The key is the variant of `RawKind` (`sql: {…}`), so "exactly one kind" is one
// key of that enum.
kinds! {
    sql => sql::RawSql,
    http => http::RawHttp,
    publish => publish::RawPublish,
}

/// The shape of one action, for finding unknown fields.
pub fn shape() -> Shape {
    Shape::Struct(FIELDS, RawKind::shapes())
}

/// Whether a key of an action names a kind.
fn is_kind(key: &str) -> bool {
    FIELDS[..FIELDS.len() - 1].contains(&key)
}

/// "`sql`, `http` or `publish`".
fn kind_list() -> String {
    let names: Vec<String> = FIELDS[..FIELDS.len() - 1]
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    crate::diag::or_list(&names)
}

/// What a planned action will do, as an approver reads it: the rule's fixed parts with this
/// repair's values.
pub fn describe(kind: &dyn ActionKind, spec: &ActionSpec) -> String {
    if let Some(error) = spec.invalid_error() {
        return format!("cannot be filled in: {error}");
    }
    if spec.kind != kind.kind() {
        return format!(
            "planned as a `{}` action ({}), but the rule's action is now a {} action",
            spec.kind,
            serde_json::Value::Object(spec.values.clone()),
            kind.kind()
        );
    }
    kind.describe(spec)
        .unwrap_or_else(|e| format!("cannot be read: {e}"))
}

/// Acts once through the action's kind; a spec planned for another kind (the rule changed
/// kind since) fails without acting.
pub async fn apply(
    kind: &dyn ActionKind,
    to: &Targets<'_>,
    spec: &ActionSpec,
    idempotency_key: &str,
) -> Attempt {
    if spec.kind != kind.kind() {
        return Attempt::Failed(format!(
            "the repair was planned as a `{}` action, and the rule's action is a `{}` action now; plan it again",
            spec.kind,
            kind.kind()
        ));
    }
    kind.apply(to, spec, idempotency_key).await
}

/// A kind's values as a spec.
fn spec<T: Serialize>(kind: &str, values: &T) -> Result<ActionSpec, String> {
    match serde_json::to_value(values) {
        Ok(serde_json::Value::Object(values)) => Ok(ActionSpec {
            kind: kind.to_string(),
            values,
        }),
        Ok(other) => Err(format!("not an object: {other}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A spec's values in its kind's terms.
fn values<T: DeserializeOwned>(spec: &ActionSpec) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(spec.values.clone()))
        .map_err(|e| format!("the planned `{}` action cannot be read: {e}", spec.kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::PlannedAction;

    /// Planned repairs are stored and served as JSON: the forms written by earlier releases
    /// read back and write out byte for byte, whatever kind they are.
    #[test]
    fn planned_actions_keep_their_stored_form() {
        for stored in [
            r#"{"name":"reserve","kind":"sql","params":[{"type":"int","value":7},{"type":"decimal","value":"19.99"},{"type":"null"}]}"#,
            r#"{"name":"refund","kind":"http","url":"http://127.0.0.1:1/r/7","body":{"amount":1999,"tags":["a"]}}"#,
            r#"{"name":"tell","kind":"publish","subject":"shop.7","payload":null}"#,
            r#"{"name":"fix","kind":"invalid","error":"params[0]: is a list"}"#,
        ] {
            let planned: PlannedAction = serde_json::from_str(stored).unwrap();
            assert_eq!(serde_json::to_string(&planned).unwrap(), stored);
        }
        let invalid = ActionSpec::invalid("no".into());
        assert_eq!(invalid.invalid_error(), Some("no"));
        let sql = spec("sql", &serde_json::json!({"params": []})).unwrap();
        assert_eq!(sql.invalid_error(), None);
    }

    #[test]
    fn a_spec_is_described_by_its_own_kind_only() {
        let publish = Publish {
            url: "nats://127.0.0.1:4222".into(),
            subject: "s.{{key}}".into(),
            json: None,
        };
        let planned = spec(
            "publish",
            &serde_json::json!({"subject": "s.7", "payload": {"order": 7}}),
        )
        .unwrap();
        assert_eq!(
            describe(&publish, &planned),
            "publish on `s.7`\n{\n  \"order\": 7\n}"
        );
        let sql = spec("sql", &serde_json::json!({"params": []})).unwrap();
        assert_eq!(
            describe(&publish, &sql),
            "planned as a `sql` action ({\"params\":[]}), but the rule's action is now a publish action"
        );
        assert_eq!(
            describe(&publish, &ActionSpec::invalid("url: bad".into())),
            "cannot be filled in: url: bad"
        );
        let broken = spec("publish", &serde_json::json!({"subject": 1})).unwrap();
        assert!(describe(&publish, &broken).starts_with("cannot be read: "));
    }

    #[test]
    fn kinds_are_named_in_the_order_they_are_listed() {
        assert_eq!(kind_list(), "`sql`, `http` or `publish`");
        assert!(is_kind("publish") && !is_kind("idempotent") && !is_kind("kafka"));
    }
}
