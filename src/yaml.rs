//! Reading YAML files strictly, with positions: documents are parsed one at a time so that an
//! error in one rule does not hide the errors of the next, and `${VAR}` references are
//! expanded from the environment with the position of the value that used them.
//!
//! Unknown fields are found in a pass of their own (`unknown_fields`, against a `Shape` built
//! from the raw structs' own field lists), so that one does not stop the typed parse: the raw
//! structs ignore unknown keys, and every other error of the document is still reported.
//!
//! Helpers every section uses: duration fields with their bounds (`duration_field`), and
//! `Tagged`, which reads a mapping whose kind is one of its keys into an externally tagged
//! enum (`sql: {…}`, `webhook: {…}`).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostics, Pos};

/// A mapping kept in file order, each key with its position (serde maps lose both).
#[derive(Debug)]
pub struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Why a file could not be read as text.
pub enum ReadError {
    Io(std::io::Error),
    /// Not UTF-8: where the first bad byte is, and the byte.
    Utf8(Pos, u8),
}

impl ReadError {
    /// The position (in the file) and the message, for a diagnostic. `what` names the file's
    /// role ("config file", "rule file").
    pub fn diagnostic(&self, what: &str) -> (Pos, String) {
        match self {
            ReadError::Io(e) => (Pos::default(), format!("cannot read the {what}: {e}")),
            ReadError::Utf8(pos, byte) => (
                *pos,
                format!("the {what} is not UTF-8 text: byte 0x{byte:02x} here is not valid UTF-8"),
            ),
        }
    }
}

/// Reads a text file; invalid UTF-8 is located at the line and column of the first bad byte.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = &bytes[..good];
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let column =
            std::str::from_utf8(&before[line_start..]).map_or(0, |s| s.chars().count()) as u64 + 1;
        ReadError::Utf8(Pos { line, column }, bytes[good])
    })
}

/// The field names of a struct deriving `Deserialize`, as serde knows them.
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldsCapture(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field list a struct asks for.
struct FieldsCapture<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldsCapture<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only structs have fields"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("fields captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// What a YAML value must look like, for finding unknown fields.
pub enum Shape {
    /// A mapping with these fields, some of which have shapes of their own.
    Struct(&'static [&'static str], Vec<(&'static str, Shape)>),
    /// A mapping of any keys to values of one shape.
    MapOf(Box<Shape>),
    /// A list of values of one shape.
    SeqOf(Box<Shape>),
    /// Anything (checked by its own parser).
    Any,
}

impl Shape {
    /// The shape of a struct deriving `Deserialize`, with the shapes of some of its fields.
    pub fn of<T: DeserializeOwned>(children: Vec<(&'static str, Shape)>) -> Shape {
        Shape::Struct(fields_of::<T>(), children)
    }
}

/// A YAML value with the position of every mapping key.
enum Node {
    Map(Vec<(Spanned<String>, Node)>),
    Seq(Vec<Node>),
    Scalar,
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Spanned<String>, Node>()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// Every field of the document that `shape` does not know, with its position and a message in
/// serde's words (plus a suggestion). A document that is not valid YAML gives none: its parse
/// error says why.
pub fn unknown_fields(doc: &Document<'_>, shape: &Shape) -> Vec<(Pos, String)> {
    let options = serde_saphyr::options! {};
    let Ok(node) = serde_saphyr::from_str_with_options::<Node>(doc.text, options) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk_unknown(&node, shape, doc.line_offset, &mut out);
    out
}

fn walk_unknown(node: &Node, shape: &Shape, line_offset: u64, out: &mut Vec<(Pos, String)>) {
    match (node, shape) {
        (Node::Map(entries), Shape::Struct(fields, children)) => {
            for (key, value) in entries {
                if !fields.contains(&key.value.as_str()) {
                    let hint = crate::diag::suggest(&key.value, fields)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    out.push((
                        pos(key, line_offset),
                        format!(
                            "unknown field `{}`{hint}, expected one of {}",
                            key.value,
                            fields.join(", ")
                        ),
                    ));
                } else if let Some((_, child)) = children.iter().find(|(f, _)| *f == key.value) {
                    walk_unknown(value, child, line_offset, out);
                }
            }
        }
        (Node::Map(entries), Shape::MapOf(child)) => {
            for (_, value) in entries {
                walk_unknown(value, child, line_offset, out);
            }
        }
        (Node::Seq(items), Shape::SeqOf(child)) => {
            for item in items {
                walk_unknown(item, child, line_offset, out);
            }
        }
        _ => {}
    }
}

/// One `---`-separated document of a file, with the number of lines before it.
pub struct Document<'a> {
    pub text: &'a str,
    pub line_offset: u64,
}

/// Splits a YAML stream at its document markers. A `---` at the start of a line always starts
/// a document (block scalar content is indented, so it cannot be one).
pub fn documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 0u64;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            // A header of comments before the first `---` is no document.
            if !only_comments(&text[start..offset]) {
                docs.push(Document {
                    text: &text[start..offset],
                    line_offset: start_line,
                });
            }
            // The marker line stays blank in the next document so columns and lines hold.
            start = offset + line.len();
            start_line = line_no as u64 + 1;
            if let Some(rest) = trimmed.strip_prefix("--- ") {
                // `--- {inline}` is rare; keep it rather than dropping it.
                if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') {
                    start = offset + 4;
                    start_line = line_no as u64;
                }
            }
        }
        offset += line.len();
    }
    if !only_comments(&text[start..]) {
        docs.push(Document {
            text: &text[start..],
            line_offset: start_line,
        });
    }
    docs
}

fn only_comments(text: &str) -> bool {
    text.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Deserializes one document; on failure returns the position (within the file) and a message
/// without the position already folded in.
pub fn parse_document<T: DeserializeOwned>(doc: &Document<'_>) -> Result<T, (Pos, String)> {
    let options = serde_saphyr::options! {};
    serde_saphyr::from_str_with_options::<T>(doc.text, options).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line() + doc.line_offset,
                column: l.column(),
            })
            .unwrap_or(Pos {
                line: doc.line_offset + 1,
                column: 0,
            });
        let rendered = e.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
        (pos, strip_location(&rendered))
    })
}

fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// The position of a spanned value in its file.
pub fn pos<T>(s: &Spanned<T>, doc_line_offset: u64) -> Pos {
    Pos {
        line: s.referenced.line() + doc_line_offset,
        column: s.referenced.column(),
    }
}

/// The position in the file of byte `offset` within the text of a spanned string scalar.
/// Handles plain, quoted and block (`|`, `>`) scalars, which are located at their content;
/// after escapes in quoted text it may be a few columns off, never on another value.
pub fn pos_in_scalar(doc: &Document<'_>, s: &Spanned<String>, offset: usize) -> Pos {
    let base = pos(s, doc.line_offset);
    let prefix = &s.value[..offset.min(s.value.len())];
    let lines_before = prefix.matches('\n').count() as u64;
    let col_in_line = prefix.rsplit('\n').next().unwrap_or("").chars().count() as u64;
    let start = s
        .referenced
        .span()
        .byte_offset()
        .and_then(|b| doc.text.get(b as usize..))
        .unwrap_or("");
    let quote = u64::from(start.starts_with('"') || start.starts_with('\''));
    if lines_before == 0 {
        Pos {
            line: base.line,
            column: base.column + quote + col_in_line,
        }
    } else {
        // Later lines of a multi-line scalar: columns count from that line's indentation.
        let line = base.line + lines_before;
        let indent = doc
            .text
            .lines()
            .nth((line - doc.line_offset).saturating_sub(1) as usize)
            .map(|l| (l.len() - l.trim_start().len()) as u64)
            .unwrap_or(0);
        Pos {
            line,
            column: indent + col_in_line + 1,
        }
    }
}

/// Expands `${NAME}` from `lookup`; `$${` stands for a literal `${`. Returns the names of
/// variables that are not set.
pub fn expand_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after_escape) = after.strip_prefix("${") {
            out.push_str("${");
            rest = after_escape;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push(name.to_string()),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("${");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// Expands `${VAR}` in a spanned value, recording an error per missing variable.
pub fn expand_spanned(
    value: &Spanned<String>,
    what: &str,
    file: &Path,
    line_offset: u64,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> String {
    match expand_env(&value.value, env) {
        Ok(v) => v,
        Err(missing) => {
            for name in missing {
                diags.push(
                    file,
                    pos(value, line_offset),
                    format!("environment variable {name} is not set (used in {what})"),
                );
            }
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_and_keep_line_numbers() {
        let text = "# header\na: 1\n---\nb: 2\n---\n# only a comment\n";
        let docs = documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line_offset, 0);
        assert_eq!(docs[1].text, "b: 2\n");
        assert_eq!(docs[1].line_offset, 3);
        // A header of comments before the first marker is no document.
        let docs = documents("# header\n# more\n---\nb: 2\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text, "b: 2\n");
    }

    #[test]
    fn env_expansion_reports_every_missing_variable() {
        let env = |n: &str| (n == "HOST").then(|| "db".to_string());
        assert_eq!(
            expand_env("postgres://${HOST}/x", &env).unwrap(),
            "postgres://db/x"
        );
        assert_eq!(
            expand_env("cost $5 $${HOST}", &env).unwrap(),
            "cost $5 ${HOST}"
        );
        assert_eq!(
            expand_env("${A}:${HOST}:${B}", &env).unwrap_err(),
            vec!["A", "B"]
        );
    }

    #[derive(serde::Deserialize)]
    struct E {
        e: Spanned<String>,
    }

    #[test]
    fn positions_inside_scalars_point_into_the_file() {
        for (text, offset, want) in [
            ("e: a == b\n", 5, (1, 9)),
            ("e: \"a == b\"\n", 5, (1, 10)),
            ("e: |\n  a ==\n  bad\n", 5, (3, 3)),
        ] {
            let docs = documents(text);
            let parsed: E = parse_document(&docs[0]).unwrap();
            let p = pos_in_scalar(&docs[0], &parsed.e, offset);
            assert_eq!((p.line, p.column), want, "{text:?}");
        }
    }
}

/// The longest a duration may be where it is used, and how the error writes it.
pub type Bound = (std::time::Duration, &'static str);

/// A duration field: `default` when absent; zero, longer than `max`, or not a duration is an
/// error where it is written.
pub fn duration_field(
    value: Option<&Spanned<String>>,
    default: std::time::Duration,
    (max, max_text): Bound,
    what: &str,
    path: &std::path::Path,
    diags: &mut Diagnostics,
) -> std::time::Duration {
    let Some(v) = value else { return default };
    match humantime::parse_duration(&v.value) {
        Ok(d) if d.is_zero() => {
            diags.push(path, pos(v, 0), format!("{what} must be greater than zero"));
            default
        }
        Ok(d) if d > max => {
            diags.push(
                path,
                pos(v, 0),
                format!(
                    "{what}: `{}` is longer than the maximum of {max_text}",
                    v.value
                ),
            );
            default
        }
        Ok(d) => d,
        Err(_) => {
            diags.push(
                path,
                pos(v, 0),
                format!(
                    "{what}: invalid duration `{}`; write it like 30s or 5m",
                    v.value
                ),
            );
            default
        }
    }
}

/// Reads a mapping value as the variant, named `tag`, of an externally tagged enum `T`: for a
/// mapping whose kind is one of its keys (`sql: {…}` beside `idempotent: true`). The value's
/// own deserializer is passed through, so positions (`Spanned`) inside it survive.
pub struct Tagged<T> {
    tag: String,
    of: std::marker::PhantomData<T>,
}

impl<T> Tagged<T> {
    pub fn new(tag: String) -> Tagged<T> {
        Tagged {
            tag,
            of: std::marker::PhantomData,
        }
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for Tagged<T> {
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(tagged::Enum {
            tag: self.tag,
            value: d,
        })
    }
}

mod tagged {
    use serde::de::{
        DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, VariantAccess, Visitor,
    };
    use serde::{Deserialize, forward_to_deserialize_any};

    /// An externally tagged enum value whose tag was already read.
    pub(super) struct Enum<D> {
        pub tag: String,
        pub value: D,
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for Enum<D> {
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

    impl<'de, D: Deserializer<'de>> EnumAccess<'de> for Enum<D> {
        type Error = D::Error;
        type Variant = Content<D>;
        fn variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<(S::Value, Content<D>), D::Error> {
            let tag: serde::de::value::StringDeserializer<D::Error> = self.tag.into_deserializer();
            Ok((seed.deserialize(tag)?, Content(self.value)))
        }
    }

    /// The value of a tagged enum.
    pub(super) struct Content<D>(D);

    impl<'de, D: Deserializer<'de>> VariantAccess<'de> for Content<D> {
        type Error = D::Error;
        fn unit_variant(self) -> Result<(), D::Error> {
            Deserialize::deserialize(self.0)
        }
        fn newtype_variant_seed<T: DeserializeSeed<'de>>(
            self,
            seed: T,
        ) -> Result<T::Value, D::Error> {
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
}
