//! In-memory datasets for the engine: rows given as values rather than read from a database,
//! judged by the same plan, merge and judge as a real run. `invariantd test` runs rule unit
//! tests through it, and the property tests compare its merge with a naive join.
//!
//! A fixture is described the way a database describes a query: its columns are the ones
//! given, and its key column is an integer when every key value is an integer, text when
//! they are integers or text, and unusable otherwise.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::rules::Fixture;
use crate::rules::Rule;
use crate::sources::{Description, KeyKind, key_of};
use crate::value::Types;
use crate::value::{Row, Value};
use crate::verdict::{OpenKeys, RuleRun, RunError};

use super::judge::Judge;
use super::merge::{Cursor, RowBatches};
use super::{finish, new_run, plan};

/// Rows in key order, handed out `batch_rows` at a time.
struct Batches {
    batches: std::vec::IntoIter<Vec<Row>>,
    null_keys: u64,
}

impl RowBatches for Batches {
    async fn next_batch(&mut self) -> Result<Option<Vec<Row>>, RunError> {
        Ok(self.batches.next())
    }

    fn null_keys(&self) -> u64 {
        self.null_keys
    }
}

fn describe(fixture: &Fixture, key: &str) -> Description {
    let key_index = fixture.columns.iter().position(|c| c == key);
    let key_kind = match key_index {
        None => KeyKind::Text,
        Some(k) => {
            let values = fixture.rows.iter().filter_map(|r| r.get(k));
            let mut kind = KeyKind::Int;
            for v in values {
                match v {
                    Value::Null | Value::Int(_) => {}
                    Value::Text(_) => kind = KeyKind::Text,
                    _ => {
                        kind = KeyKind::Unsupported;
                        break;
                    }
                }
            }
            kind
        }
    };
    let value_types = (0..fixture.columns.len())
        .map(|i| {
            let seen = fixture
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .fold(Types::default(), |t, v| t.with(value_type(v)));
            // A column with no value but NULL may hold anything.
            if seen == Types::default() {
                Types::COLUMN
            } else {
                seen
            }
        })
        .collect();
    Description {
        value_types,
        types: fixture
            .columns
            .iter()
            .enumerate()
            .map(|(i, _)| match key_index {
                Some(k) if k == i && key_kind == KeyKind::Unsupported => {
                    "a value that is neither an integer nor text".into()
                }
                _ => "fixture".into(),
            })
            .collect(),
        columns: fixture.columns.clone(),
        key_index,
        key_kind,
    }
}

/// The type of a fixture value, as a query's column of that type would give it.
fn value_type(v: &Value) -> Types {
    match v {
        Value::Null => Types::default(),
        Value::Bool(_) => Types::BOOL,
        Value::Int(_) => Types::INT,
        Value::Double(_) => Types::DOUBLE,
        Value::Decimal(_) => Types::DECIMAL,
        Value::Text(_) => Types::STRING,
        Value::Bytes(_) => Types::BYTES,
        Value::Timestamp(_) => Types::TIMESTAMP,
    }
}

/// Runs `rule` at `now` over in-memory datasets (one per rule dataset, in rule order), with
/// rows delivered `batch_rows` at a time (at least one); `previous` is what the rule measured
/// at the run before (for a rule that measures).
pub async fn run_fixtures(
    rule: &Rule,
    fixtures: &[Fixture],
    (now, previous): (DateTime<Utc>, Option<i64>),
    open: &dyn OpenKeys,
    batch_rows: usize,
) -> RuleRun {
    let mut run = new_run(rule, now);
    let result = async {
        let descriptions: Vec<Description> =
            fixtures.iter().map(|f| describe(f, &rule.key)).collect();
        let plan = plan::plan(rule, &descriptions)?;
        let mut cursors = Vec::with_capacity(fixtures.len());
        for (fixture, description) in fixtures.iter().zip(&descriptions) {
            let k = description
                .key_index
                .expect("the plan checked the key column");
            let mut rows = Vec::with_capacity(fixture.rows.len());
            let mut null_keys = 0;
            for values in &fixture.rows {
                let mut values = values.clone();
                values.resize(fixture.columns.len(), Value::Null);
                match key_of(&values[k], plan.mode)? {
                    Some(key) => rows.push(Row {
                        key,
                        values: values.into(),
                    }),
                    None => null_keys += 1,
                }
            }
            // Stable: rows with the same key keep their given order, as a database would
            // return them for an ORDER BY on the key alone (in some order).
            rows.sort_by(|a, b| a.key.cmp(&b.key));
            let mut batches = Vec::new();
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                batches.push(rows.by_ref().take(batch_rows.max(1)).collect());
            }
            cursors.push(Cursor::new(Batches {
                batches: batches.into_iter(),
                null_keys,
            }));
        }
        let judge = Judge::new(
            rule,
            &plan,
            now.timestamp_micros(),
            super::judge::Grace::Apply,
        )
        .after(previous);
        super::merge::merge(rule, &judge, &mut cursors, open, None, &mut run).await
    }
    .await;
    finish(rule, run, result, Duration::ZERO)
}
