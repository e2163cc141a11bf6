//! The columns a dataset's query returns, read from its SQL text without a database, so that
//! `validate` can catch a misspelt column in `assert` or `message` before anything runs.
//! When the SQL cannot be read this way (`SELECT *`, an unnamed expression, a dialect feature
//! the parser does not know) the answer is "unknown", and the check happens when the rule runs.

use sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::config::SourceKind;

pub fn static_columns(sql: &str, kind: SourceKind) -> Option<Vec<String>> {
    let dialect: &dyn Dialect = match kind {
        SourceKind::Postgres => &PostgreSqlDialect {},
        SourceKind::MySql => &MySqlDialect {},
        SourceKind::Sqlite => &SQLiteDialect {},
    };
    let statements = Parser::parse_sql(dialect, sql).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    query_columns(query, kind)
}

fn query_columns(query: &Query, kind: SourceKind) -> Option<Vec<String>> {
    set_expr_columns(&query.body, kind)
}

fn set_expr_columns(body: &SetExpr, kind: SourceKind) -> Option<Vec<String>> {
    match body {
        SetExpr::Select(select) => select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias, kind)),
                SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(ident_name(ident, kind)),
                SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    parts.last().map(|i| ident_name(i, kind))
                }
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => query_columns(q, kind),
        // A UNION's columns are named by its first branch.
        SetExpr::SetOperation { left, .. } => set_expr_columns(left, kind),
        _ => None,
    }
}

/// PostgreSQL folds unquoted identifiers to lower case; MySQL and SQLite return them as written.
fn ident_name(ident: &Ident, kind: SourceKind) -> String {
    if ident.quote_style.is_none() && kind == SourceKind::Postgres {
        ident.value.to_lowercase()
    } else {
        ident.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_aliases_columns_and_the_first_union_branch() {
        let cols = static_columns(
            "WITH x AS (SELECT 1 AS a) SELECT p.Order_Id, amount AS \"Amt\", COUNT(*) AS n FROM payments p GROUP BY 1, 2",
            SourceKind::Postgres,
        );
        assert_eq!(cols.unwrap(), ["order_id", "Amt", "n"]);
        let cols = static_columns(
            "SELECT Id FROM a UNION ALL SELECT id2 FROM b",
            SourceKind::MySql,
        );
        assert_eq!(cols.unwrap(), ["Id"]);
    }

    #[test]
    fn unknown_when_the_sql_does_not_say() {
        assert_eq!(static_columns("SELECT * FROM t", SourceKind::Sqlite), None);
        assert_eq!(
            static_columns("SELECT id, count(*) FROM t GROUP BY id", SourceKind::Sqlite),
            None
        );
        assert_eq!(static_columns("not sql at all", SourceKind::Postgres), None);
    }
}
