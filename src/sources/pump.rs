//! The second half of every reader, the same for every database: hand the description to the
//! engine, wait for the run's key order, run the query with that order pushed into the
//! database, and pump its decoded rows in batches through a bounded channel, at the pace the
//! source allows, checking that the database really sorted them as asked. Readers of their
//! own (the wire readers) key their rows as they decode them and hand over whole batches
//! (`Keyed`, `pump_decoded`); rows from the driver are keyed here, one at a time (`pump`).

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::errors::{abandoned, query_error, timed_out};
use super::filters::{KeySql, key_filter, range_filter, since_filter};
use super::pacing::Throttle;
use super::request::{Description, KeyKind, KeyMode, ReadRequest, ReaderMsg, Spent, key_of};
use crate::value::{Key, Row, Types, Value, Values};
use crate::verdict::{ErrorKind, RunError};

/// Rows per batch sent from a reader to the merge.
const BATCH_ROWS: usize = 1024;

/// Where a reader sends its messages, at the pace its source allows.
#[derive(Clone, Copy)]
pub(crate) struct Sink<'a> {
    pub tx: &'a mpsc::Sender<ReaderMsg>,
    pub throttle: Option<&'a Throttle>,
    /// The batches the merge gave back, to fill again.
    pub spent: &'a Spent,
}

impl Sink<'_> {
    /// Sends a batch of rows once the source's budget allows; an error when the run is gone.
    async fn rows(&self, batch: Vec<Row>) -> Result<(), RunError> {
        if let Some(throttle) = self.throttle
            && let at = throttle.book(batch.len())
            && at > Instant::now()
        {
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.tx.closed() => return Err(abandoned()),
            }
        }
        self.tx
            .send(ReaderMsg::Rows(batch))
            .await
            .map_err(|_| abandoned())
    }
}

/// The rows a reader of its own decoded and keyed, up to a batch, waiting to be handed over:
/// each row's values go straight into the `Row` the merge will take, with no queue of values
/// between the reader and the pump.
pub(crate) struct Keyed {
    key_index: usize,
    mode: KeyMode,
    rows: Vec<Row>,
    spent: Spent,
    null_keys: u64,
    /// How many rows the last hand-over held: the room the next one starts with, so that a
    /// stream of whole batches does not grow a vector for each, nor a trickle of a few rows
    /// at a time allocate a whole batch for each.
    last: usize,
}

impl Keyed {
    /// Keys rows by the column at `key_index`, in the run's key order `mode`, into batches
    /// the merge gave back (`spent`) when there are any.
    pub(crate) fn new(key_index: usize, mode: KeyMode, spent: &Spent) -> Keyed {
        Keyed {
            key_index,
            mode,
            rows: Vec::new(),
            spent: spent.clone(),
            null_keys: 0,
            last: 0,
        }
    }

    /// Takes a decoded row: keyed, or counted when its key is NULL (it cannot be joined); an
    /// error when its key is of a type the run's key order cannot take.
    #[cfg(test)]
    pub(crate) fn push(&mut self, values: Values) -> Result<(), RunError> {
        self.decode(|v| {
            *v = values;
            Ok(())
        })
    }

    /// Decodes a row where it will lie in the batch (`decode` fills its values; a narrow row
    /// is not moved from the decoder to the batch), then keys it, or counts it and leaves it
    /// out when its key is NULL (it cannot be joined). An error when `decode` fails or the key
    /// is of a type the run's key order cannot take; the row is then not kept.
    pub(crate) fn decode(
        &mut self,
        decode: impl FnOnce(&mut Values) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        if self.rows.capacity() == 0 {
            self.rows = self
                .spent
                .take(self.last.next_power_of_two().clamp(16, BATCH_ROWS));
        }
        self.rows.push(Row::empty());
        let row = self.rows.last_mut().expect("just pushed");
        let keyed =
            decode(&mut row.values).and_then(|()| key_of(&row.values[self.key_index], self.mode));
        match keyed {
            Ok(Some(key)) => row.key = key,
            Ok(None) => {
                self.rows.pop();
                self.null_keys += 1;
            }
            Err(e) => {
                self.rows.pop();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Whether a whole batch waits: the reader then hands it over before decoding more.
    pub(crate) fn full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS
    }

    /// What waits to be handed over, if anything.
    pub(crate) fn take(&mut self) -> Option<Decoded> {
        (!self.rows.is_empty() || self.null_keys > 0).then(|| {
            self.last = self.rows.len();
            Decoded::Rows {
                rows: std::mem::take(&mut self.rows),
                null_keys: std::mem::take(&mut self.null_keys),
            }
        })
    }

    /// After an error: nothing more is handed over.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.null_keys = 0;
    }
}

/// What a reader of its own hands to the pump at once (no trip through the stream per row):
/// its keyed rows, in the order they came, and how many rows it left out for a NULL key since
/// the last hand-over; or the error that ended them.
pub(crate) enum Decoded {
    Rows { rows: Vec<Row>, null_keys: u64 },
    Failed(RunError),
}

/// Fills the batches the merge takes, checking that the database really sorted the rows the
/// way it was asked to (a collation surprise must not become false violations).
struct Batcher<'a> {
    to: Sink<'a>,
    deadline: Instant,
    batch: Vec<Row>,
    /// The last key of the last batch sent.
    last: Option<Key>,
    null_keys: u64,
}

impl<'a> Batcher<'a> {
    fn new(to: Sink<'a>, deadline: Instant) -> Batcher<'a> {
        Batcher {
            to,
            deadline,
            batch: to.spent.take(BATCH_ROWS),
            last: None,
            null_keys: 0,
        }
    }

    /// The key the next row must not sort before.
    fn prev(&self) -> Option<&Key> {
        self.batch.last().map(|r| &r.key).or(self.last.as_ref())
    }

    /// Adds a row, sending the batch once it is full.
    async fn push(&mut self, row: Row) -> Result<(), RunError> {
        if let Some(prev) = self.prev() {
            in_order(prev, &row.key)?;
        }
        self.batch.push(row);
        if self.batch.len() >= BATCH_ROWS {
            self.send_gathered().await?;
        }
        Ok(())
    }

    /// Adds a reader's rows: sent as they are when they make a batch of their own, otherwise
    /// gathered with the rows before them.
    async fn push_all(&mut self, mut rows: Vec<Row>) -> Result<(), RunError> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        if let Some(prev) = self.prev() {
            in_order(prev, &first.key)?;
        }
        for pair in rows.windows(2) {
            in_order(&pair[0].key, &pair[1].key)?;
        }
        // A batch is never larger than the reader's hand-over or `BATCH_ROWS`.
        if !self.batch.is_empty() && self.batch.len() + rows.len() > BATCH_ROWS {
            self.send_gathered().await?;
        }
        if self.batch.is_empty() && rows.len() >= BATCH_ROWS / 2 {
            return self.send(rows).await;
        }
        self.batch.append(&mut rows);
        self.to.spent.give(rows);
        if self.batch.len() >= BATCH_ROWS {
            self.send_gathered().await?;
        }
        Ok(())
    }

    /// Sends the rows gathered so far as a batch, and starts the next.
    async fn send_gathered(&mut self) -> Result<(), RunError> {
        let gathered = std::mem::replace(&mut self.batch, self.to.spent.take(BATCH_ROWS));
        self.send(gathered).await
    }

    /// Sends a batch, unless the run's time is up.
    async fn send(&mut self, batch: Vec<Row>) -> Result<(), RunError> {
        if Instant::now() >= self.deadline {
            return Err(timed_out());
        }
        self.last = batch.last().map(|r| r.key.clone());
        self.to.rows(batch).await
    }

    /// Sends what is left and says the rows are over.
    async fn finish(self) -> Result<(), RunError> {
        if !self.batch.is_empty() {
            self.to.rows(self.batch).await?;
        }
        let _ = self
            .to
            .tx
            .send(ReaderMsg::Done {
                null_keys: self.null_keys,
            })
            .await;
        Ok(())
    }
}

/// `key` may follow `prev` in byte-wise key order.
fn in_order(prev: &Key, key: &Key) -> Result<(), RunError> {
    if key < prev {
        return Err(RunError::new(
            ErrorKind::QueryFailed,
            format!(
                "the database returned key {key} after {prev}: rows are not in byte-wise key order, so the datasets cannot be joined reliably"
            ),
        ));
    }
    Ok(())
}

/// The stream's next item. Items already received are taken at once. Only a wait for the
/// database watches the deadline and the run: it may take long before the next row, the run
/// may be abandoned meanwhile, and the caller then stops the query on the server (see
/// `interrupted`). Rows that keep coming are held to both at every batch.
async fn next_item<S: Stream + Unpin>(
    stream: &mut S,
    deadline: Instant,
    to: Sink<'_>,
) -> Result<Option<S::Item>, RunError> {
    match stream.next().now_or_never() {
        Some(next) => Ok(next),
        None => tokio::select! {
            next = tokio::time::timeout_at(deadline, stream.next()) => next.map_err(|_| timed_out()),
            () = to.tx.closed() => Err(abandoned()),
        },
    }
}

/// Streams the driver's rows to the engine in key order, each decoded by `decode` and keyed
/// by the column at `key_index`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pump<S, R>(
    mut stream: S,
    query: &str,
    key_index: usize,
    mode: KeyMode,
    deadline: Instant,
    decode: impl Fn(R) -> Result<Values, RunError>,
    to: Sink<'_>,
) -> Result<(), RunError>
where
    S: Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    let mut out = Batcher::new(to, deadline);
    while let Some(row) = next_item(&mut stream, deadline, to).await? {
        let row = row.map_err(|e| query_error(e, "query failed", query))?;
        let values = decode(row)?;
        match key_of(&values[key_index], mode)? {
            Some(key) => out.push(Row { key, values }).await?,
            None => out.null_keys += 1,
        }
    }
    out.finish().await
}

/// Streams the rows a reader of its own decoded and keyed (`Keyed`) to the engine, checking
/// their order as `pump` does.
pub(crate) async fn pump_decoded<S>(
    mut stream: S,
    query: &str,
    deadline: Instant,
    to: Sink<'_>,
) -> Result<(), RunError>
where
    S: Stream<Item = Result<Decoded, sqlx::Error>> + Unpin,
{
    let mut out = Batcher::new(to, deadline);
    while let Some(chunk) = next_item(&mut stream, deadline, to).await? {
        match chunk.map_err(|e| query_error(e, "query failed", query))? {
            Decoded::Rows { rows, null_keys } => {
                out.null_keys += null_keys;
                out.push_all(rows).await?;
            }
            Decoded::Failed(e) => return Err(e),
        }
    }
    out.finish().await
}

/// Hands the description to the engine and waits for the run's key order: the key column's
/// index and the order, or `None` when there is nothing to read (the run was abandoned, or the
/// query has no key column, which the engine reports).
pub(crate) async fn handshake(
    description: Description,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Option<(usize, KeyMode)> {
    let key_index = description.key_index;
    if to.tx.send(ReaderMsg::Described(description)).await.is_err() {
        return None;
    }
    Some((key_index?, mode.await.ok()?))
}

/// The second half of every reader: sends the description, waits for the run's key order,
/// then runs the query with that order pushed into the database and pumps its rows.
/// `order_by` gives the database's ORDER BY expression for a key order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn describe_then_stream<'c, DB, E>(
    executor: E,
    description: Description,
    wrapped: &str,
    key_sql: KeySql<'_>,
    decode: impl Fn(&DB::Row) -> Result<Values, RunError>,
    request: &ReadRequest,
    to: Sink<'_>,
    mode: oneshot::Receiver<KeyMode>,
) -> Result<(), RunError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'c, Database = DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let key_kind = description.key_kind.clone();
    // The filters are built before the description is handed over, which they read.
    let mut args = DB::Arguments::default();
    let mut filters = Vec::new();
    if let Some(changed) = &request.changed_since {
        filters.push(since_filter::<DB>(
            changed,
            &description,
            &key_sql,
            &mut args,
        )?);
    }
    let Some((key_index, mode)) = handshake(description, to, mode).await else {
        return Ok(());
    };
    // With arguments (even none) the query is prepared and rows come in the binary format the
    // decoders expect, as with `sqlx::query`; bare SQL would use PostgreSQL's text protocol.
    if let Some(keys) = &request.keys {
        filters.push(key_filter::<DB>(keys, key_kind, &key_sql, &mut args)?);
    }
    if let Some(range) = &request.range
        && let Some(f) = range_filter(
            range,
            mode,
            &key_sql.column,
            &key_sql.order_text,
            key_sql.text,
        )?
    {
        filters.push(f);
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let order_by = match mode {
        KeyMode::Int => &key_sql.order_int,
        KeyMode::Text => &key_sql.order_text,
    };
    let sql = format!("{wrapped}{filter} ORDER BY {order_by}");
    let query = (sqlx::AssertSqlSafe(sql), Some(args));
    pump(
        executor.fetch(query),
        &request.query,
        key_index,
        mode,
        request.deadline,
        |row| decode(&row),
        to,
    )
    .await
}

/// A prepared query's columns, each with the decoder its type needs.
pub(crate) struct Columns<D> {
    pub names: Vec<String>,
    pub types: Vec<String>,
    pub decoders: Vec<D>,
}

impl<D: Copy> Columns<D> {
    /// From (name, type name, decoder) per column; a column without a decoder is an error
    /// naming it, with a hint how to cast it.
    pub fn new(
        columns: impl IntoIterator<Item = (String, String, Option<D>)>,
        cast_hint: &str,
    ) -> Result<Columns<D>, RunError> {
        let mut out = Columns {
            names: Vec::new(),
            types: Vec::new(),
            decoders: Vec::new(),
        };
        let mut unreadable = Vec::new();
        for (name, ty, decoder) in columns {
            match decoder {
                Some(d) => out.decoders.push(d),
                None => unreadable.push(format!("{name} ({ty})")),
            }
            out.names.push(name);
            out.types.push(ty);
        }
        if unreadable.is_empty() {
            Ok(out)
        } else {
            Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "invariantd cannot read the type of column {}; cast it in the query, e.g. {cast_hint}",
                    unreadable.join(", ")
                ),
            ))
        }
    }

    /// What the engine needs to know; `key_kind` classifies the key column, by its index, and
    /// `value_types` says which expression types a decoder produces.
    pub fn description(
        &self,
        key: &str,
        key_kind: impl FnOnce(usize) -> KeyKind,
        value_types: impl Fn(D) -> Types,
    ) -> Description {
        let key_index = self.names.iter().position(|c| c == key);
        Description {
            columns: self.names.clone(),
            types: self.types.clone(),
            value_types: self.decoders.iter().map(|d| value_types(*d)).collect(),
            key_index,
            key_kind: key_index.map_or(KeyKind::Text, key_kind),
        }
    }

    /// Decodes every column of a row.
    pub fn decode<R>(
        &self,
        row: &R,
        decode: impl Fn(&R, usize, D) -> Result<Value, sqlx::Error>,
    ) -> Result<Values, RunError> {
        self.decoders
            .iter()
            .enumerate()
            .map(|(i, d)| {
                decode(row, i, *d).map_err(|e| {
                    RunError::new(
                        ErrorKind::SchemaMismatch,
                        format!("cannot decode column `{}`: {e}", self.names[i]),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn row(key: i64) -> Row {
        Row {
            key: Key::Int(key),
            values: Values::from_iter([Value::Int(key)]),
        }
    }

    /// What `pump_decoded` sends for these hand-overs: the batches' keys and the NULL keys
    /// counted, or the error it ended with.
    async fn pumped(chunks: Vec<Decoded>) -> (Vec<Vec<i64>>, Option<u64>, Option<RunError>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let spent = Spent::default();
        let to = Sink {
            tx: &tx,
            throttle: None,
            spent: &spent,
        };
        let error = pump_decoded(stream, "q", deadline, to).await.err();
        drop(tx);
        let (mut batches, mut done) = (Vec::new(), None);
        while let Some(msg) = rx.recv().await {
            match msg {
                ReaderMsg::Rows(rows) => batches.push(
                    rows.iter()
                        .map(|r| match r.key {
                            Key::Int(k) => k,
                            Key::Text(_) => unreachable!(),
                        })
                        .collect(),
                ),
                ReaderMsg::Done { null_keys } => done = Some(null_keys),
                _ => unreachable!(),
            }
        }
        (batches, done, error)
    }

    fn rows(keys: std::ops::Range<i64>, null_keys: u64) -> Decoded {
        Decoded::Rows {
            rows: keys.map(row).collect(),
            null_keys,
        }
    }

    #[tokio::test]
    async fn a_readers_batches_go_out_whole_small_ones_gathered_and_null_keys_summed() {
        let n = BATCH_ROWS as i64;
        let (batches, done, error) = pumped(vec![
            rows(0..n, 1),
            rows(n..n + 3, 0),
            rows(n + 3..n + 5, 2),
            rows(n + 5..2 * n + 5, 0),
            rows(2 * n + 5..2 * n + 6, 0),
            rows(2 * n + 6..2 * n + 10, 0),
        ])
        .await;
        assert!(error.is_none(), "{error:?}");
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        // Whole hand-overs go as they are; small ones are gathered, and sent before a whole
        // one rather than making a batch larger than either.
        assert_eq!(sizes, [BATCH_ROWS, 5, BATCH_ROWS, 5]);
        let keys: Vec<i64> = batches.concat();
        assert_eq!(keys, (0..2 * n + 10).collect::<Vec<_>>());
        assert_eq!(done, Some(3));
    }

    #[tokio::test]
    async fn rows_out_of_key_order_end_the_read_within_a_hand_over_and_across_two() {
        let mut backwards = rows(0..10, 0);
        if let Decoded::Rows { rows, .. } = &mut backwards {
            rows.swap(4, 5);
        }
        for chunks in [
            vec![backwards],
            vec![rows(0..10, 0), rows(5..20, 0)],
            vec![rows(0..BATCH_ROWS as i64, 0), rows(3..4, 0)],
        ] {
            let (_, done, error) = pumped(chunks).await;
            let error = error.expect("rows out of order are an error");
            assert_eq!(error.kind, ErrorKind::QueryFailed);
            assert!(
                error.message.contains("not in byte-wise key order"),
                "{}",
                error.message
            );
            assert_eq!(done, None, "a read that failed does not say it is done");
        }
    }

    #[tokio::test]
    async fn a_readers_error_ends_the_read_with_that_error() {
        let failed = Decoded::Failed(RunError::new(ErrorKind::SchemaMismatch, "bad column"));
        let (_, done, error) = pumped(vec![rows(0..3, 0), failed]).await;
        assert_eq!(error.map(|e| e.message).as_deref(), Some("bad column"));
        assert_eq!(done, None);
    }

    #[test]
    fn keyed_rows_count_null_keys_and_refuse_a_key_of_the_wrong_type() {
        let mut keyed = Keyed::new(1, KeyMode::Int, &Spent::default());
        keyed
            .push(Values::from_iter([Value::Text("a".into()), Value::Int(7)]))
            .unwrap();
        keyed
            .push(Values::from_iter([Value::Text("b".into()), Value::Null]))
            .unwrap();
        let error = keyed
            .push(Values::from_iter([Value::Null, Value::Text("x".into())]))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::SchemaMismatch);
        match keyed.take() {
            Some(Decoded::Rows { rows, null_keys }) => {
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].key, Key::Int(7));
                assert_eq!(null_keys, 1);
            }
            _ => panic!("rows were keyed"),
        }
        assert!(keyed.take().is_none(), "nothing is handed over twice");
    }

    #[test]
    fn keyed_rows_fill_a_batch_the_merge_gave_back() {
        let spent = Spent::default();
        let given: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
        let at = given.as_ptr().addr();
        spent.give(given);
        let mut keyed = Keyed::new(0, KeyMode::Int, &spent);
        keyed.push(Values::from_iter([Value::Int(1)])).unwrap();
        match keyed.take() {
            Some(Decoded::Rows { rows, .. }) => assert_eq!(rows.as_ptr().addr(), at),
            _ => panic!("a row was keyed"),
        }
    }

    #[tokio::test]
    async fn rows_gathered_from_a_small_hand_over_give_its_batch_back() {
        let (tx, _rx) = mpsc::channel(4);
        let spent = Spent::default();
        let to = Sink {
            tx: &tx,
            throttle: None,
            spent: &spent,
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let mut out = Batcher::new(to, deadline);
        let mut small = Vec::with_capacity(16);
        small.push(row(1));
        let at = small.as_ptr().addr();
        out.push_all(small).await.unwrap();
        assert_eq!(out.batch.len(), 1, "gathered, not sent");
        let again = spent.take(1);
        assert_eq!(again.as_ptr().addr(), at);
    }
}
