//! The merge join: every dataset's rows arrive in key order, batch by batch, through
//! `RowBatches`; one pass takes the smallest head key, finds each dataset's rows for it where
//! they lie (its `Group` borrows them from the batch), and hands the key to the judge. Memory
//! is a batch per dataset, and a key's rows where they run over a batch's end, whatever the
//! table size. The same code merges rows streamed from databases and in-memory fixtures, which
//! is what lets it be tested against a naive join without a database.

use std::future::Future;

use smallvec::SmallVec;

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
/// (at `at`). A key's rows are judged where they lie, a slice of the batch: no row is moved
/// into a group nor dropped there. Only a key whose rows run on past the end of a batch has
/// them moved out, into `carried`, so that the spent batch can be given back and its next one
/// read.
pub(crate) struct Cursor<B> {
    batches: B,
    batch: Vec<Row>,
    at: usize,
    /// The rows of the key at hand taken from batches already spent.
    carried: Vec<Row>,
    rows: u64,
    done: bool,
}

/// Where a dataset's rows for the key at hand lie (`Cursor::gather`).
#[derive(Clone, Copy)]
enum Gathered {
    /// In the batch at hand, from the head up to this index (none when it is the head's).
    Batch(usize),
    /// In `carried`.
    Carried,
}

impl<B: RowBatches> Cursor<B> {
    pub(crate) fn new(batches: B) -> Cursor<B> {
        Cursor {
            batches,
            batch: Vec::new(),
            at: 0,
            carried: Vec::new(),
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

    /// The rows of `key` at the head, when they end within the batch at hand: where they
    /// end (at the head when there are none). `None` when they reach its end: they may go on
    /// in the next batch (`carry`). Nothing is consumed until `advance`.
    #[inline]
    fn gather(&self, key: &Key) -> Option<usize> {
        let rest = &self.batch[self.at..];
        let run = rest.iter().take_while(|r| r.key == *key).count();
        (run < rest.len() || run == 0).then_some(self.at + run)
    }

    /// The rows of `key` at the head that reach the batch's end (`gather`), and those that
    /// go on in the next batches, moved into `carried` while each spent batch is given back;
    /// how many there are. Without `many` only the first is kept: more are an error of the
    /// key, counted, and a query that returns one key for every row must not be held whole.
    async fn carry(&mut self, key: &Key, many: bool) -> Result<usize, RunError> {
        let mut count = 0;
        loop {
            let rest = &mut self.batch[self.at..];
            let run = rest.iter().take_while(|r| r.key == *key).count();
            count += run;
            let runs_on = run > 0 && run == rest.len();
            if runs_on {
                self.carried.extend(self.batch.drain(self.at..));
            } else {
                // The key's last rows, at the front of a batch (or none).
                let last = rest[..run].iter_mut();
                self.carried
                    .extend(last.map(|r| std::mem::replace(r, Row::empty())));
                self.at += run;
            }
            if !many {
                self.carried.truncate(1);
            }
            if !runs_on {
                return Ok(count);
            }
            self.fill().await?;
        }
    }

    /// The rows `gather` or `carry` found.
    fn gathered(&self, at: Gathered) -> &[Row] {
        match at {
            Gathered::Batch(end) => &self.batch[self.at..end],
            Gathered::Carried => &self.carried,
        }
    }

    /// Consumes the rows `gather` or `carry` found (`count` of them) once they were judged;
    /// `fill` must run before the next look at the head if the batch is then spent.
    fn advance(&mut self, at: Gathered, count: usize) {
        match at {
            Gathered::Batch(end) => self.at = end,
            Gathered::Carried => self.carried.clear(),
        }
        self.rows += count as u64;
    }

    /// Whether the batch at hand is spent.
    fn spent(&self) -> bool {
        self.at >= self.batch.len()
    }

    /// Waits for the next batch when the one at hand is spent, so that `head` is the next
    /// row, or `None` once every row was delivered. Most rows need no wait: the async step
    /// is only taken at the end of a batch.
    async fn fill(&mut self) -> Result<(), RunError> {
        while self.spent() && !self.done {
            // Cleared here, where the rows' type is known and their drop inlined (it is
            // not in `Spent::give`).
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
    let mut gathered: Vec<(Gathered, usize)> = Vec::with_capacity(cursors.len());
    let mut keys: u64 = 0;
    while let Some(key) = next_key(cursors) {
        keys += 1;
        if sample_every.is_some_and(|n| keys.is_multiple_of(n)) {
            run.samples.push(key.clone());
        }
        gathered.clear();
        for (i, c) in cursors.iter_mut().enumerate() {
            // Written out here rather than as an async method of the cursor: awaiting one
            // for every key of every dataset cost 3.5M instructions more at 100,000 orders
            // (14 a row), `#[inline]` or not; the test's `gather_all` does the same.
            let found = match c.gather(&key) {
                Some(end) => (Gathered::Batch(end), end - c.at),
                None => {
                    let many = rule.datasets[i].many;
                    let count = c.carry(&key, many).await.map_err(|e| what(i, e))?;
                    (Gathered::Carried, count)
                }
            };
            gathered.push(found);
        }
        let duplicate =
            (gathered.iter().zip(&rule.datasets)).position(|(&(_, count), d)| count > 1 && !d.many);
        if let Some(i) = duplicate {
            let message = duplicate_rows(&rule.datasets[i].name, gathered[i].1);
            add_key_error(run, open, key, ErrorKind::DuplicateRows, message);
        } else {
            let mut groups: SmallVec<[Group<'_>; 4]> = SmallVec::new();
            for ((c, &(at, _)), d) in cursors.iter().zip(&gathered).zip(&rule.datasets) {
                groups.push(Group {
                    rows: c.gathered(at),
                    many: d.many,
                });
            }
            judge.judge(&groups, key, open, run)?;
        }
        for (i, (c, &(at, count))) in cursors.iter_mut().zip(&gathered).enumerate() {
            c.advance(at, count);
            if c.spent() {
                c.fill().await.map_err(|e| what(i, e))?;
            }
        }
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

    /// Every key the cursor gathers in turn (as a `many` dataset or not): the key, its rows'
    /// last values, whether they were carried over a batch's end, and how many rows it had.
    async fn gather_all(
        cursor: &mut Cursor<Recorded>,
        many: bool,
    ) -> Vec<(Key, Vec<i64>, bool, usize)> {
        let mut out = Vec::new();
        cursor.fill().await.unwrap();
        while let Some(key) = cursor.head().map(|r| r.key.clone()) {
            let (at, count) = match cursor.gather(&key) {
                Some(end) => (Gathered::Batch(end), end - cursor.at),
                None => (Gathered::Carried, cursor.carry(&key, many).await.unwrap()),
            };
            let rows = cursor.gathered(at);
            assert!(rows.iter().all(|r| r.key == key));
            let values = rows.iter().map(|r| match r.values.last() {
                Some(Value::Int(v)) => *v,
                _ => unreachable!(),
            });
            let carried = matches!(at, Gathered::Carried);
            out.push((key, values.collect(), carried, count));
            cursor.advance(at, count);
            cursor.fill().await.unwrap();
        }
        out
    }

    /// Rows of the keys given, each with its key and then its place in the whole sequence
    /// from `first` on.
    fn numbered(keys: &[i64], first: i64) -> Vec<Row> {
        let mut rows = Vec::with_capacity(8);
        rows.extend(keys.iter().zip(first..).map(|(&k, v)| Row {
            key: Key::Int(k),
            values: Values::from_iter([Value::Int(k), Value::Int(v)]),
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
        let keys: Vec<Key> = gather_all(&mut cursor, true)
            .await
            .into_iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(keys, (0..8).map(Key::Int).collect::<Vec<_>>());
        assert_eq!(cursor.rows, 8);
        let given = &cursor.batches.given_back;
        // Every batch, emptied, in the order it came, with the room it had.
        assert_eq!(given.iter().map(|g| g.0).collect::<Vec<_>>(), sent);
        assert!(
            given
                .iter()
                .all(|&(_, capacity, len)| capacity == 8 && len == 0)
        );
    }

    /// A key's rows where they lie when they are in one batch; carried, all of them and in
    /// order, when they run on over one batch's end or several; and every batch given back.
    #[tokio::test]
    async fn a_keys_rows_across_batches_are_carried_whole_and_in_order() {
        // Key 2 runs over two batch ends, key 4 ends a batch exactly, key 6 is alone in the
        // last one.
        let batches = vec![
            numbered(&[1, 1, 2, 2], 0),
            numbered(&[2], 4),
            numbered(&[2, 3, 4], 5),
            numbered(&[5, 5], 8),
            numbered(&[6], 10),
        ];
        let mut cursor = Cursor::new(Recorded {
            batches: batches.into_iter(),
            given_back: Vec::new(),
        });
        let gathered = gather_all(&mut cursor, true).await;
        let expected = vec![
            (Key::Int(1), vec![0, 1], false, 2),
            (Key::Int(2), vec![2, 3, 4, 5], true, 4),
            (Key::Int(3), vec![6], false, 1),
            (Key::Int(4), vec![7], true, 1),
            (Key::Int(5), vec![8, 9], true, 2),
            (Key::Int(6), vec![10], true, 1),
        ];
        assert_eq!(gathered, expected);
        assert_eq!(cursor.rows, 11);
        assert!(cursor.carried.is_empty());
        assert_eq!(cursor.batches.given_back.len(), 5);
    }

    /// Without `many`, a key whose rows run over batch ends is counted whole but only its
    /// first row is kept: a query that returns one key for every row is an error of that key,
    /// not every row held in memory.
    #[tokio::test]
    async fn a_dataset_without_many_keeps_one_row_of_a_key_that_runs_over_batches() {
        let batches = vec![
            numbered(&[1, 2, 2, 2], 0),
            numbered(&[2, 2, 2, 2], 4),
            numbered(&[2, 2, 3], 8),
        ];
        let mut cursor = Cursor::new(Recorded {
            batches: batches.into_iter(),
            given_back: Vec::new(),
        });
        let gathered = gather_all(&mut cursor, false).await;
        let expected = vec![
            (Key::Int(1), vec![0], false, 1),
            (Key::Int(2), vec![1], true, 9),
            (Key::Int(3), vec![10], true, 1),
        ];
        assert_eq!(gathered, expected);
        assert_eq!(cursor.rows, 11);
    }
}
