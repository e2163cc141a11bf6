//! Reading and checking one action of a rule's `repair:` section: `RawAction` reads its keys —
//! `idempotent`, and the kind keys that `RawKind` takes — and `Checker` holds what every kind's
//! checks need (the file, the document, the config, the environment, the rule's scope) with
//! the helpers that report an error where it is written.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::template::json_templates;
use super::{Action, ActionKind, RawKind, is_kind, kind_list};
use crate::config::Config;
use crate::diag::{Diagnostics, Pos};
use crate::expr::{Scope, Template};
use crate::yaml::{self, Document};

/// One action as written: its kinds (exactly one is valid) and whether it is idempotent.
/// Other keys are left to the unknown-field check, which says where they are.
#[derive(Debug)]
pub struct RawAction {
    kinds: Vec<RawKind>,
    idempotent: bool,
}

impl<'de> Deserialize<'de> for RawAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawAction, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an action: one of {}", kind_list())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawAction, A::Error> {
                let mut out = RawAction {
                    kinds: Vec::new(),
                    idempotent: false,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "idempotent" {
                        out.idempotent = map.next_value()?;
                    } else if is_kind(&key) {
                        out.kinds
                            .push(map.next_value_seed(yaml::Tagged::<RawKind>::new(key))?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks one rule's actions.
pub struct Checker<'a> {
    pub file: &'a Path,
    pub doc: &'a Document<'a>,
    pub config: &'a Config,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub scope: &'a Scope<'a>,
    /// Names the rule in messages.
    pub ctx: &'a str,
}

impl Checker<'_> {
    pub fn at<T>(&self, s: &Spanned<T>) -> Pos {
        yaml::pos(s, self.doc.line_offset)
    }

    /// One action, written at `pos`.
    pub fn action(
        &self,
        name: &str,
        pos: Pos,
        raw: RawAction,
        diags: &mut Diagnostics,
    ) -> Option<Action> {
        let ctx = format!("{}: repair action `{name}`", self.ctx);
        let mut kinds = raw.kinds;
        let kind: Arc<dyn ActionKind> = match kinds.pop() {
            Some(kind) if kinds.is_empty() => kind.check(self, &ctx, diags)?,
            _ => {
                diags.push(
                    self.file,
                    pos,
                    format!("{ctx}: give exactly one of {}", kind_list()),
                );
                return None;
            }
        };
        Some(Action {
            name: name.to_string(),
            kind,
            idempotent: raw.idempotent,
        })
    }

    /// A string with its `${VAR}`s expanded; `what` names it in messages.
    pub(super) fn expand(
        &self,
        s: &Spanned<String>,
        what: &str,
        diags: &mut Diagnostics,
    ) -> String {
        yaml::expand_spanned(s, what, self.file, self.doc.line_offset, self.env, diags)
    }

    /// Compiles a template against the rule's scope, reporting errors where they are written.
    pub(super) fn template(&self, s: &Spanned<String>, what: &str, diags: &mut Diagnostics) {
        if let Err(errors) = Template::compile(&s.value, self.scope) {
            for e in errors {
                diags.push(
                    self.file,
                    yaml::pos_in_scalar(self.doc, s, e.offset),
                    format!("{what}: {}", e.message),
                );
            }
        }
    }

    /// Compiles every template string of a JSON body; errors point at the body.
    pub(super) fn json(&self, j: &Spanned<serde_json::Value>, what: &str, diags: &mut Diagnostics) {
        let mut texts = Vec::new();
        json_templates(&j.value, &mut texts);
        for t in texts {
            if let Err(errors) = Template::compile(&t, self.scope) {
                for e in errors {
                    diags.push(
                        self.file,
                        self.at(j),
                        format!("{what}: in `{t}`: {}", e.message),
                    );
                }
            }
        }
    }
}
