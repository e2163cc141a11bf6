//! Reading and checking one action of a rule's `repair:` section: `RawAction` reads its keys —
//! `idempotent`, and the kind keys that `RawKind` takes — and `Checker` holds what every kind's
//! checks need (the file, the document, the config, the environment, the rule's scope) with
//! the helpers that report an error where it is written.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, IntoDeserializer, MapAccess,
    VariantAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
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
                        out.kinds.push(map.next_value_seed(KindSeed(key))?);
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

/// Reads the value of a kind key as `RawKind`'s variant of that name: the value's own
/// deserializer is passed through, so positions (`Spanned`) survive.
struct KindSeed(String);

impl<'de> DeserializeSeed<'de> for KindSeed {
    type Value = RawKind;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(Tagged {
            tag: self.0,
            value: d,
        })
    }
}

/// An externally tagged enum value whose tag was already read.
struct Tagged<D> {
    tag: String,
    value: D,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tagged<D> {
    type Error = D::Error;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_enum(self)
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, D: Deserializer<'de>> EnumAccess<'de> for Tagged<D> {
    type Error = D::Error;
    type Variant = Content<D>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Content<D>), D::Error> {
        let tag: de::value::StringDeserializer<D::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, Content(self.value)))
    }
}

/// The value of a tagged enum.
struct Content<D>(D);

impl<'de, D: Deserializer<'de>> VariantAccess<'de> for Content<D> {
    type Error = D::Error;
    fn unit_variant(self) -> Result<(), D::Error> {
        Deserialize::deserialize(self.0)
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, D::Error> {
        seed.deserialize(self.0)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct("", fields, v)
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
