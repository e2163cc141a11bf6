//! The second half of every reader, the same for every database: hand the description to the
//! engine, wait for the run's key order, run the query with that order pushed into the
//! database, and pump its decoded rows in batches through a bounded channel, at the pace the
//! source allows, checking that the database really sorted them as asked.

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::errors::{abandoned, query_error, timed_out};
use super::filters::{KeySql, key_filter, range_filter, since_filter};
use super::pacing::Throttle;
use super::request::{Description, KeyKind, KeyMode, ReadRequest, ReaderMsg, key_of};
use crate::value::{Key, Row, Types, Value, Values};
use crate::verdict::{ErrorKind, RunError};

/// Rows per batch sent from a reader to the merge.
const BATCH_ROWS: usize = 1024;

/// Where a reader sends its messages, at the pace its source allows.
#[derive(Clone, Copy)]
pub(crate) struct Sink<'a> {
    pub tx: &'a mpsc::Sender<ReaderMsg>,
    pub throttle: Option<&'a Throttle>,
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

/// The rows a reader of its own decoded from what it had received, handed to the pump at
/// once (no trip through the stream per row), or the error that ended them.
pub(crate) enum Decoded {
    Rows(std::collections::VecDeque<Values>),
    Failed(Option<RunError>),
}

impl Iterator for Decoded {
    type Item = Result<Values, RunError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Decoded::Rows(rows) => rows.pop_front().map(Ok),
            Decoded::Failed(e) => e.take().map(Err),
        }
    }
}

/// Streams decoded rows to the engine in key order, checking that the database really sorted
/// them the way it was asked to (a collation surprise must not become false violations). The
/// stream hands out rows in chunks (`Decoded`, or one row at a time as `std::iter::once`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pump<S, C, R>(
    mut stream: S,
    query: &str,
    key_index: usize,
    mode: KeyMode,
    deadline: Instant,
    decode: impl Fn(R) -> Result<Values, RunError>,
    to: Sink<'_>,
) -> Result<(), RunError>
where
    S: Stream<Item = Result<C, sqlx::Error>> + Unpin,
    C: IntoIterator<Item = R>,
{
    let tx = to.tx;
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut last: Option<Key> = None;
    let mut null_keys = 0u64;
    loop {
        // Rows already received are taken at once. Only a wait for the database watches the
        // deadline and the run: it may take long before the next row, the run may be abandoned
        // meanwhile, and the caller then stops the query on the server (see `interrupted`).
        // Rows that keep coming are held to both at every batch.
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => tokio::select! {
                next = tokio::time::timeout_at(deadline, stream.next()) => match next {
                    Ok(n) => n,
                    Err(_) => return Err(timed_out()),
                },
                () = tx.closed() => return Err(abandoned()),
            },
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| query_error(e, "query failed", query))?;
        for row in chunk {
            let values = decode(row)?;
            let Some(key) = key_of(&values[key_index], mode)? else {
                null_keys += 1;
                continue;
            };
            // The previous key is the batch's last row, or the last row of the batch before.
            if let Some(prev) = batch.last().map(|r: &Row| &r.key).or(last.as_ref())
                && key < *prev
            {
                return Err(RunError::new(
                    ErrorKind::QueryFailed,
                    format!(
                        "the database returned key {key} after {prev}: rows are not in byte-wise key order, so the datasets cannot be joined reliably"
                    ),
                ));
            }
            batch.push(Row { key, values });
            if batch.len() == BATCH_ROWS {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
                last = batch.last().map(|r| r.key.clone());
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                to.rows(full).await?;
            }
        }
    }
    if !batch.is_empty() {
        to.rows(batch).await?;
    }
    let _ = tx.send(ReaderMsg::Done { null_keys }).await;
    Ok(())
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
    let stream = executor.fetch(query).map(|row| row.map(std::iter::once));
    pump(
        stream,
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
