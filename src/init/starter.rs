//! What `init` writes, decided from the sources' catalogs alone (pure): which tables of two
//! sources can be related by a key column, and the text of the starter configuration and
//! rule file. A relation is found by a shared key-like column name (`order_id` on both
//! sides), or by a table's single-column primary key and a column named after the table on
//! the other side (`orders.id` and `payments.order_id`); the most telling one per source
//! pair becomes a commented example rule with its `tests:`.

use crate::config::SourceKind;
use crate::sources::Column;

/// One source as `init` found it.
pub struct Found {
    pub name: String,
    pub kind: SourceKind,
    pub columns: Vec<Column>,
}

/// A table's column on one side of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub source: String,
    pub kind: SourceKind,
    pub schema: String,
    pub table: String,
    pub column: String,
    pub integer: bool,
}

/// Two tables of two sources related by a key: every `child` row's key should be a
/// `parent` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub key: String,
    pub child: Side,
    pub parent: Side,
    /// Why these two: for the rule's comment.
    pub because: String,
}

/// A name that can be a key column's alias, a fixture column and a rule name's part.
fn plain(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A primary key, `id`, or a name ending in `_id`, `_key` or `_uuid`.
pub fn key_like(c: &Column) -> bool {
    c.primary_key
        || c.name == "id"
        || ["_id", "_key", "_uuid"]
            .iter()
            .any(|s| c.name.ends_with(s) && c.name.len() > s.len())
}

/// `orders` → `order`, `deliveries` → `delivery`, `address` stays.
fn singular(table: &str) -> String {
    let t = table.to_ascii_lowercase();
    if let Some(stem) = t.strip_suffix("ies") {
        format!("{stem}y")
    } else if t.ends_with("ss") {
        t
    } else {
        t.strip_suffix('s').map(str::to_string).unwrap_or(t)
    }
}

/// The columns that alone are their table's primary key.
fn single_keys(columns: &[Column]) -> Vec<&Column> {
    columns
        .iter()
        .filter(|c| {
            c.primary_key
                && columns
                    .iter()
                    .filter(|o| o.primary_key && o.schema == c.schema && o.table == c.table)
                    .count()
                    == 1
        })
        .collect()
}

fn side(found: &Found, c: &Column) -> Side {
    let t = c.data_type.to_ascii_lowercase();
    Side {
        source: found.name.clone(),
        kind: found.kind,
        schema: c.schema.clone(),
        table: c.table.clone(),
        column: c.name.clone(),
        integer: t.contains("int") || t == "serial" || t == "bigserial",
    }
}

/// The best relation between two sources, if any: by a primary key and a column named after
/// its table (3), by a shared column that is the primary key on one side (2), by a shared
/// key-like column (1); ties go to the first tables by name.
pub fn relate(a: &Found, b: &Found) -> Option<Relation> {
    let mut best: Option<(u8, Relation)> = None;
    let mut offer = |score: u8, r: Relation| {
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, r));
        }
    };
    for (x, y) in [(a, b), (b, a)] {
        // x's table has a single-column primary key; y has a column named after that table.
        for pk in single_keys(&x.columns) {
            let key = format!("{}_id", singular(&pk.table));
            if !plain(&key) {
                continue;
            }
            for c in y.columns.iter().filter(|c| c.name == key) {
                offer(
                    3,
                    Relation {
                        key: key.clone(),
                        child: side(y, c),
                        parent: side(x, pk),
                        because: format!(
                            "{}.{} is named after {}, whose primary key is {}",
                            c.table, c.name, pk.table, pk.name
                        ),
                    },
                );
            }
        }
    }
    let (a_single, b_single) = (single_keys(&a.columns), single_keys(&b.columns));
    for ca in a.columns.iter().filter(|c| key_like(c) && c.name != "id") {
        for cb in b
            .columns
            .iter()
            .filter(|c| c.name == ca.name && plain(&c.name))
        {
            let a_pk = a_single.contains(&ca);
            let b_pk = b_single.contains(&cb);
            let (child, parent) = if a_pk && !b_pk {
                (side(b, cb), side(a, ca))
            } else {
                (side(a, ca), side(b, cb))
            };
            let because = match (a_pk, b_pk) {
                (true, false) | (false, true) => format!(
                    "both have `{}`, the primary key of {}",
                    ca.name, parent.table
                ),
                _ => format!("both have a column `{}`", ca.name),
            };
            let score = if a_pk != b_pk { 2 } else { 1 };
            offer(
                score,
                Relation {
                    key: ca.name.clone(),
                    child,
                    parent,
                    because,
                },
            );
        }
    }
    best.map(|(_, r)| r)
}

/// One relation per pair of sources that can be related, in the order the sources were given.
pub fn relations(found: &[Found]) -> Vec<Relation> {
    let mut out = Vec::new();
    for (i, a) in found.iter().enumerate() {
        for b in &found[i + 1..] {
            out.extend(relate(a, b));
        }
    }
    out
}

/// A table as its database's SQL names it, quoted.
fn table_sql(s: &Side) -> String {
    let quote = |name: &str| match s.kind {
        SourceKind::MySql => format!("`{}`", name.replace('`', "``")),
        SourceKind::Postgres | SourceKind::Sqlite => format!("\"{}\"", name.replace('"', "\"\"")),
    };
    match s.kind {
        SourceKind::Postgres if s.schema != "public" => {
            format!("{}.{}", quote(&s.schema), quote(&s.table))
        }
        _ => quote(&s.table),
    }
    .replace("${", "$${")
}

fn column_sql(s: &Side) -> String {
    match s.kind {
        SourceKind::MySql => format!("`{}`", s.column.replace('`', "``")),
        SourceKind::Postgres | SourceKind::Sqlite => {
            format!("\"{}\"", s.column.replace('"', "\"\""))
        }
    }
    .replace("${", "$${")
}

/// Text for a comment: on one line.
fn line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A YAML single-quoted scalar.
pub fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `[a-z_][a-z0-9_]*` made of a table's name: a dataset's name in `assert`.
fn dataset_name(table: &str) -> String {
    let mut n: String = table
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    if ["now", "key", "null", "true", "false", "in"].contains(&n.as_str()) {
        n.push_str("_rows");
    }
    n
}

/// The starter configuration: the sources (as the URLs are to be written) and the rules
/// directory.
pub fn config_text(sources: &[(String, String)]) -> String {
    let mut out = String::from(
        "# Written by `invariantd init`: the sources it was given and where the rules are.\n\
         # Every field is in the README (Configuration). Check it with `invariantd validate --connect`.\n\
         sources:\n",
    );
    for (name, url) in sources {
        out.push_str(&format!("  {name}: {{ url: {} }}\n", quoted(url)));
    }
    out.push_str("rules: [rules/]\n");
    out
}

/// The starter rule file: one commented rule per relation, each with a passing and a failing
/// case.
pub fn rules_text(relations: &[Relation], found: &[Found]) -> String {
    let mut out = String::from(
        "# Written by `invariantd init`: one example rule per pair of sources it could relate by\n\
         # a key column. Each says \"every row on one side has its key on the other\"; make\n\
         # `assert` say what must hold in your shop (README: Rules, Expressions, Built-in\n\
         # checks), then `invariantd test` and `invariantd check`.\n",
    );
    if relations.is_empty() {
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        out.push_str(&format!(
            "#\n# No two of the sources ({}) share a key-like column (a primary key, `id`,\n\
             # or a name ending in _id, _key or _uuid), so there is no example here yet.\n",
            names.join(", ")
        ));
        return out;
    }
    let mut names: Vec<String> = Vec::new();
    for r in relations {
        let (mut child, mut parent) = (dataset_name(&r.child.table), dataset_name(&r.parent.table));
        if child == parent {
            child = format!("{}_{child}", dataset_name(&r.child.source));
            parent = format!("{}_{parent}", dataset_name(&r.parent.source));
        }
        let mut name = format!("{child}_has_{parent}");
        let base = name.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name.clone());
        let (yes, no) = if r.child.integer && r.parent.integer {
            ("1".to_string(), "2".to_string())
        } else {
            (quoted("a"), quoted("b"))
        };
        let select = |s: &Side| {
            quoted(&format!(
                "SELECT {} AS {} FROM {}",
                column_sql(s),
                r.key,
                table_sql(s)
            ))
        };
        let k = &r.key;
        out.push_str(&format!(
            "---\n\
             # {ct} (source {cs}) and {pt} (source {ps}): {because}.\n\
             # Example: every {k} in {ct} is also in {pt}. Rows are read as lists (`many`),\n\
             # so a key may repeat on either side.\n\
             name: {name}\n\
             description: {desc}\n\
             severity: warning\n\
             every: 5m\n\
             key: {k}\n\
             datasets:\n  \
               {child}:\n    source: {cs}\n    query: {cq}\n    many: true\n  \
               {parent}:\n    source: {ps}\n    query: {pq}\n    many: true\n\
             assert: size({child}) == 0 || size({parent}) > 0\n\
             message: {message}\n\
             tests:\n  \
               - name: {pass_case}\n    \
                 given:\n      {child}: [{{ {k}: {yes} }}]\n      {parent}: [{{ {k}: {yes} }}]\n    \
                 expect: pass\n  \
               - name: {fail_case}\n    \
                 given:\n      {child}: [{{ {k}: {no} }}]\n    \
                 expect: {{ violations: [{no}] }}\n",
            pass_case = quoted(&format!("a {} row with its {} row passes", r.child.table, r.parent.table)),
            fail_case = quoted(&format!("a {} row without one is a violation", r.child.table)),
            ct = line(&r.child.table),
            cs = r.child.source,
            pt = line(&r.parent.table),
            ps = r.parent.source,
            because = line(&r.because),
            desc = quoted(&format!(
                "Every {} row's {k} is in {} ({}).",
                r.child.table, r.parent.table, r.parent.source
            )),
            cq = select(&r.child),
            pq = select(&r.parent),
            message = quoted(&format!(
                "{{{{key}}}}: in {} ({}), not in {} ({})",
                r.child.table, r.child.source, r.parent.table, r.parent.source
            )),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
