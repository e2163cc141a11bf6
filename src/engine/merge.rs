//! The merge join: every dataset's rows arrive in key order, batch by batch, through
//! `RowBatches`; one pass takes the smallest head key, gathers each dataset's rows for it into
//! its `Group`, and hands the key to the judge. Memory is a batch per dataset, whatever the
//! table size. The same code merges rows streamed from databases and in-memory fixtures, which
//! is what lets it be tested against a naive join without a database.

use std::future::Future;

use crate::expr::Group;
use crate::rules::Rule;
use crate::value::{Key, Row};
use crate::verdict::{ErrorKind, OpenKeys, RuleRun, RunError};

use super::judge::{Judge, add_key_error};

/// A dataset's rows in key order, in batches: what the merge reads.
pub trait RowBatches: Send {
    /// The next batch (never empty), or `None` once every row was delivered.
    fn next_batch(&mut self) -> impl Future<Output = Result<Option<Vec<Row>>, RunError>> + Send;

    /// Rows left out because their key was NULL (they cannot be joined); final once
    /// `next_batch` returned `None`.
    fn null_keys(&self) -> u64;

    /// Takes back a batch the merge emptied, to fill it again (its allocation goes round
    /// instead of being freed and made again for every batch); dropped by default.
    fn give_back(&mut self, _spent: Vec<Row>) {}
}

/// One dataset's position in the merge: its head is the first row left in the batch at hand
/// (at `at`), looked at where it lies and moved out only when a group takes it, leaving an
/// empty row in its place, so that the emptied batch's allocation can be given back.
pub(crate) struct Cursor<B> {
    batches: B,
    batch: Vec<Row>,
    at: usize,
    rows: u64,
    done: bool,
}

impl<B: RowBatches> Cursor<B> {
    pub(crate) fn new(batches: B) -> Cursor<B> {
        Cursor {
            batches,
            batch: Vec::new(),
            at: 0,
            rows: 0,
            done: false,
        }
    }

    /// The dataset's batches, for a reader that takes them whole (an incremental run's
    /// changed keys), before any was read.
    pub(crate) fn into_batches(self) -> B {
        self.batches
    }

    /// The next row, if any is left (once `fill` has run).
    fn head(&self) -> Option<&Row> {
        self.batch.get(self.at)
    }

    /// Whether the batch at hand is spent.
    fn spent(&self) -> bool {
        self.at >= self.batch.len()
    }

    /// Takes the head; then `fill` must run before the next look at the head.
    fn take(&mut self) -> Option<Row> {
        let slot = self.batch.get_mut(self.at)?;
        let row = std::mem::replace(slot, Row::empty());
        self.at += 1;
        self.rows += 1;
        Some(row)
    }

    /// Waits for the next batch when the one at hand is spent, so that `head` is the next
    /// row, or `None` once every row was delivered. Most rows need no wait: the async step
    /// is only taken at the end of a batch.
    async fn fill(&mut self) -> Result<(), RunError> {
        while self.spent() && !self.done {
            // Cleared here, where the rows' type is known and their drop inlined: the empty
            // rows `take` left behind cost half as much to drop as in `Spent::give`.
            let mut spent = std::mem::take(&mut self.batch);
            spent.clear();
            self.at = 0;
            if spent.capacity() > 0 {
                self.batches.give_back(spent);
            }
            match self.batches.next_batch().await? {
                Some(rows) => self.batch = rows,
                None => self.done = true,
            }
        }
        Ok(())
    }
}

/// Merges the cursors (one per dataset, in rule order) and judges every key; with
/// `sample_every`, every such key is noted in `run.samples`. On error the run is abandoned
/// part-way: the caller makes it `unknown`.
pub(crate) async fn merge<B: RowBatches>(
    rule: &Rule,
    judge: &Judge<'_>,
    cursors: &mut [Cursor<B>],
    open: &dyn OpenKeys,
    sample_every: Option<u64>,
    run: &mut RuleRun,
) -> Result<(), RunError> {
    let what = |i: usize, e: RunError| {
        let at = super::where_(rule, i, e.kind);
        e.context(at)
    };
    for (i, c) in cursors.iter_mut().enumerate() {
        c.fill().await.map_err(|e| what(i, e))?;
    }
    let mut groups: Vec<Group> = rule
        .datasets
        .iter()
        .map(|d| Group {
            rows: Vec::new(),
            many: d.many,
        })
        .collect();
    let mut duplicates: Vec<(usize, usize)> = Vec::new();
    let mut keys: u64 = 0;
    while let Some(key) = next_key(cursors) {
        keys += 1;
        if sample_every.is_some_and(|n| keys.is_multiple_of(n)) {
            run.samples.push(key.clone());
        }
        for g in &mut groups {
            g.rows.clear();
        }
        duplicates.clear();
        for (i, c) in cursors.iter_mut().enumerate() {
            let mut count = 0;
            while c.head().is_some_and(|r| r.key == key) {
                let row = c.take().expect("checked");
                count += 1;
                if groups[i].many || groups[i].rows.is_empty() {
                    groups[i].rows.push(row);
                }
                if c.spent() {
                    c.fill().await.map_err(|e| what(i, e))?;
                }
            }
            if count > 1 && !groups[i].many {
                duplicates.push((i, count));
            }
        }
        if let Some(&(i, count)) = duplicates.first() {
            add_key_error(
                run,
                open,
                key,
                ErrorKind::DuplicateRows,
                duplicate_rows(&rule.datasets[i].name, count),
            );
            continue;
        }
        judge.judge(&groups, key, open, run)?;
        if judge.should_yield() {
            tokio::task::yield_now().await;
        }
    }
    for (i, c) in cursors.iter().enumerate() {
        let null_keys = c.batches.null_keys();
        run.rows_scanned[i] += c.rows + null_keys;
        if null_keys > 0 {
            tracing::warn!(
                rule = %rule.name,
                dataset = %rule.datasets[i].name,
                rows = null_keys,
                "Rows with a NULL key were left out: they cannot be joined."
            );
        }
    }
    Ok(())
}

/// The error of a key for which a dataset without `many` returned several rows.
pub(crate) fn duplicate_rows(dataset: &str, count: usize) -> String {
    format!(
        "dataset `{dataset}` returned {count} rows for this key; without `many: true` a dataset must return at most one row per key"
    )
}

fn next_key<B: RowBatches>(cursors: &[Cursor<B>]) -> Option<Key> {
    cursors
        .iter()
        .filter_map(|c| c.head().map(|r| &r.key))
        .min()
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Value, Values};

    /// Batches handed out in turn, noting the allocation of each batch given back.
    struct Recorded {
        batches: std::vec::IntoIter<Vec<Row>>,
        /// Where each batch given back lies, its room and its length.
        given_back: Vec<(usize, usize, usize)>,
    }

    impl RowBatches for Recorded {
        async fn next_batch(&mut self) -> Result<Option<Vec<Row>>, RunError> {
            Ok(self.batches.next())
        }

        fn null_keys(&self) -> u64 {
            0
        }

        fn give_back(&mut self, spent: Vec<Row>) {
            self.given_back
                .push((spent.as_ptr().addr(), spent.capacity(), spent.len()));
        }
    }

    fn batch(keys: std::ops::Range<i64>) -> Vec<Row> {
        let mut rows = Vec::with_capacity(8);
        rows.extend(keys.map(|k| Row {
            key: Key::Int(k),
            values: Values::from_iter([Value::Int(k)]),
        }));
        rows
    }

    #[tokio::test]
    async fn a_cursor_gives_back_each_batch_it_emptied_with_its_allocation() {
        let batches = vec![batch(0..3), batch(3..5), batch(5..8)];
        let sent: Vec<usize> = batches.iter().map(|b| b.as_ptr().addr()).collect();
        let mut cursor = Cursor::new(Recorded {
            batches: batches.into_iter(),
            given_back: Vec::new(),
        });
        let mut keys = Vec::new();
        cursor.fill().await.unwrap();
        while let Some(row) = cursor.take() {
            keys.push(row.key);
            cursor.fill().await.unwrap();
        }
        assert_eq!(keys, (0..8).map(Key::Int).collect::<Vec<_>>());
        let given = &cursor.batches.given_back;
        // Every batch, emptied, in the order it came, with the room it had.
        assert_eq!(given.iter().map(|g| g.0).collect::<Vec<_>>(), sent);
        assert!(
            given
                .iter()
                .all(|&(_, capacity, len)| capacity == 8 && len == 0)
        );
    }
}
