//! The optional conditions of the list queries (`WHERE a AND b`), each with its parameter.

use super::{Bind, Stmt};

/// The optional conditions of a list query, each with its parameter, and the statement they
/// make: `SELECT … [WHERE a AND b] ORDER BY … LIMIT $n`.
#[derive(Default)]
pub(crate) struct Where {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl Where {
    /// Adds `lhs $n` (such as `rule =`) when there is a value.
    pub fn and(&mut self, lhs: &str, value: Option<Bind>) -> &mut Where {
        if let Some(v) = value {
            self.binds.push(v);
            self.conditions.push(format!("{lhs} ${}", self.binds.len()));
        }
        self
    }

    /// Adds `column IN ($n, …)` when there is a list of texts; an empty list matches nothing.
    pub fn and_in(&mut self, column: &str, values: Option<&[String]>) -> &mut Where {
        let Some(values) = values else {
            return self;
        };
        if values.is_empty() {
            self.conditions.push("1 = 0".into());
            return self;
        }
        let mut params = Vec::with_capacity(values.len());
        for v in values {
            self.binds.push(Bind::Text(v.clone()));
            params.push(format!("${}", self.binds.len()));
        }
        self.conditions
            .push(format!("{column} IN ({})", params.join(", ")));
        self
    }

    pub fn select(mut self, select: &str, order_by: &str, limit: u32) -> Stmt {
        self.binds.push(Bind::I64(i64::from(limit)));
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        Stmt {
            sql: format!(
                "{select}{filter} ORDER BY {order_by} LIMIT ${}",
                self.binds.len()
            ),
            binds: self.binds,
        }
    }
}
