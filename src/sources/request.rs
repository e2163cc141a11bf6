//! The vocabulary of one read, between the engine and a source: what to read
//! (`ReadRequest`: the query, its key, a deadline, which keys, which key range or which recent
//! changes, a snapshot shared with the run's other datasets or the sweep's other ranges), what
//! the reader found (`Description`) and the messages it streams back (`ReaderMsg`), and the key
//! orders a run can read in.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::value::{Key, Row, Types, Value};
use crate::verdict::{ErrorKind, RunError};

/// How a key column can take part in the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Text,
    /// A type that cannot be a join key.
    Unsupported,
}

/// The order every dataset of one rule run is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Int,
    Text,
}

/// What describing a dataset's query found.
#[derive(Debug, Clone)]
pub struct Description {
    pub columns: Vec<String>,
    /// Database type names, for messages.
    pub types: Vec<String>,
    /// The expression types each column's values can have (for the assertion's type check).
    pub value_types: Vec<Types>,
    pub key_index: Option<usize>,
    pub key_kind: KeyKind,
}

/// Messages from a reader to the engine.
#[derive(Debug)]
pub enum ReaderMsg {
    Described(Description),
    Rows(Vec<Row>),
    /// Every row was sent. Rows whose key was NULL were left out (they cannot be joined) and
    /// are counted here. A channel that closes without `Done` means the reader died: the
    /// engine must not take that for the end of the data.
    Done {
        null_keys: u64,
    },
    Failed(RunError),
}

/// The engine's end of a running reader.
pub struct Reader {
    pub messages: mpsc::Receiver<ReaderMsg>,
    /// Send the run's key order once every dataset is described; drop to cancel.
    pub mode: oneshot::Sender<KeyMode>,
    /// Where the merge gives back the batches it emptied, for the reader to fill again.
    pub spent: Spent,
}

/// Batches the merge emptied, given back to the reader that sent them: a batch's allocation
/// (up to `BATCH_ROWS` rows of about 130 bytes) goes round between the two instead of being
/// freed on one thread and allocated again on another, which made the allocator give pages
/// back and fault them in again (about 100,000 minor faults in a sweep of 10M orders, half
/// of the sweep's system time). At most `SPENT_KEPT` wait; the rest are freed.
#[derive(Clone, Default)]
pub struct Spent(Arc<Mutex<Vec<Vec<Row>>>>);

/// Spent batches kept for a reader: what its channel and its own hand-over can hold.
const SPENT_KEPT: usize = 8;

impl Spent {
    /// Gives back a batch the merge emptied (one that still holds rows is cleared first).
    pub fn give(&self, mut batch: Vec<Row>) {
        batch.clear();
        if batch.capacity() == 0 {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < SPENT_KEPT {
            kept.push(batch);
        }
    }

    /// An empty batch: one given back, or a new one with room for `rows`.
    pub fn take(&self, rows: usize) -> Vec<Row> {
        let given = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        given.unwrap_or_else(|| Vec::with_capacity(rows))
    }
}

/// What a reader needs to know about its dataset.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub query: String,
    pub key: String,
    /// When the whole read must be over: the statement timeout, enforced here too for
    /// databases without one of their own (SQLite).
    pub deadline: Instant,
    /// Read only these keys (`WHERE key IN (…)` pushed into the query, each key a bound
    /// parameter); `None` reads every key.
    pub keys: Option<Vec<String>>,
    /// Read only the rows whose `updated_at` column is at or after this instant (an
    /// incremental run's first step: which keys changed).
    pub changed_since: Option<ChangedSince>,
    /// The snapshot this read shares with the rule's other datasets on the same source.
    pub snapshot: Option<SharedSnapshot>,
    /// Read only the keys in this range of the run's key order (one part of a sweep split
    /// across replicas); `None` reads every key.
    pub range: Option<KeyRange>,
}

/// Keys from `from` (included) up to `until` (excluded), in the run's key order: numeric for
/// integer keys, byte-wise for text. An open end is unbounded. A bound is a key as a run met
/// it, so it says which order it was sampled in: an integer bound cannot split text keys, nor
/// a text bound integer ones (they would split them in another order).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRange {
    pub from: Option<Key>,
    pub until: Option<Key>,
}

/// One snapshot for the datasets of a rule run on one PostgreSQL source: the first reader
/// exports its transaction's snapshot (`pg_export_snapshot()`), the others import it (`SET
/// TRANSACTION SNAPSHOT`) before their first query, so every dataset sees the same committed
/// data. The exporter's transaction stays open until every reader has described its query,
/// which is after every import.
#[derive(Debug, Clone)]
pub struct SharedSnapshot {
    pub exporter: bool,
    /// `Some(Some(id))` once exported, `Some(None)` when the exporter could not (each reader
    /// then takes its own snapshot).
    pub id: Arc<tokio::sync::watch::Sender<Option<Option<String>>>>,
}

impl SharedSnapshot {
    /// Snapshots for `n` readers, the first the exporter.
    pub fn group(n: usize) -> Vec<SharedSnapshot> {
        let id = Arc::new(tokio::sync::watch::Sender::new(None));
        (0..n)
            .map(|i| SharedSnapshot {
                exporter: i == 0,
                id: id.clone(),
            })
            .collect()
    }

    /// A reader that imports `id`, a snapshot exported elsewhere (`Source::export_snapshot`,
    /// by the replica that started a partitioned sweep) and still held there.
    pub fn imported(id: String) -> SharedSnapshot {
        SharedSnapshot {
            exporter: false,
            id: Arc::new(tokio::sync::watch::Sender::new(Some(Some(id)))),
        }
    }

    /// Publishes the exported snapshot (or that there is none) to the other readers.
    pub(crate) fn publish(&self, id: Option<String>) {
        self.id.send_if_modified(|v| {
            let unset = v.is_none();
            if unset {
                *v = Some(id);
            }
            unset
        });
    }

    /// The exported snapshot to import, waiting for the exporter until `deadline`; `None`
    /// when it could not export one.
    pub(crate) async fn wait(&self, deadline: Instant) -> Option<String> {
        let mut rx = self.id.subscribe();
        let published = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await;
        match published {
            Ok(Ok(v)) => v.clone().flatten(),
            _ => None,
        }
    }
}

/// `WHERE updated_at >= since`, for a dataset's `updated_at` column.
#[derive(Debug, Clone)]
pub struct ChangedSince {
    pub column: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

impl ChangedSince {
    /// The bound value: UTC, to the millisecond, rounded down (every database's date functions
    /// read this form; the overlap margin makes the lost microseconds irrelevant).
    pub(crate) fn value(&self) -> String {
        self.since.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }
}

/// The join key of a key column value in `mode`; `None` for NULL. Integer keys in integer
/// order, most keys, come first and inlined: every row of every reader is keyed here, and then
/// costs its caller no call. The rest, text keys and the error, are out of line.
#[inline]
pub fn key_of(v: &Value, mode: KeyMode) -> Result<Option<Key>, RunError> {
    match (v, mode) {
        (Value::Int(i), KeyMode::Int) => Ok(Some(Key::Int(*i))),
        (Value::Null, _) => Ok(None),
        _ => other_key(v, mode),
    }
}

#[inline(never)]
fn other_key(v: &Value, mode: KeyMode) -> Result<Option<Key>, RunError> {
    Ok(Some(match (v, mode) {
        (Value::Int(i), KeyMode::Text) => Key::Text(i.to_string().into()),
        (Value::Text(s), KeyMode::Text) => Key::Text(s.clone()),
        (other, _) => {
            return Err(RunError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "key value `{other}` is a {}, not an {}",
                    other.type_name(),
                    if mode == KeyMode::Int {
                        "integer"
                    } else {
                        "integer or text"
                    }
                ),
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_batches_come_back_empty_and_only_as_many_as_are_kept() {
        let spent = Spent::default();
        // Nothing given back: a new batch with the room asked for.
        assert!(spent.take(16).capacity() >= 16);
        let mut batch = Vec::with_capacity(64);
        batch.push(Row {
            key: Key::Int(1),
            values: Default::default(),
        });
        let at = batch.as_ptr();
        spent.give(batch);
        let again = spent.take(16);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        assert!(again.capacity() >= 64);
        // A batch without room is not kept; beyond SPENT_KEPT, none is.
        spent.give(Vec::new());
        for _ in 0..SPENT_KEPT + 3 {
            spent.give(Vec::with_capacity(4));
        }
        assert_eq!(spent.0.lock().unwrap().len(), SPENT_KEPT);
    }
}
