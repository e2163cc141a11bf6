//! The rows of a statement executed over the protocol (`wire.rs`), in the binary protocol,
//! decoded straight from the bytes received by the column types the query was described with
//! (`decode.rs` decodes the same types from the driver's rows).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_util::Stream;
use rust_decimal::Decimal;

use super::decode::{Decode, TimeOfDay};
use super::wire::{ColumnDef, Conn, READ_CHUNK, WireError, lenenc_int, payload_at, server_error};
use crate::sources::pump::{Decoded, Keyed};
use crate::value::{Value, Values, timestamp_from_date, timestamp_from_naive};
use crate::verdict::{ErrorKind, RunError};

/// Where a value's bytes end in a binary row.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Fixed(usize),
    /// A length byte, then that many bytes (dates, times).
    Counted,
    /// A length-encoded string.
    Lenenc,
}

enum State {
    /// Waiting for the column count.
    Head,
    /// Column definitions still to come.
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEnd,
    Rows,
    Done,
}

/// The decoded rows of an executed statement, keyed as they are decoded and handed over a
/// batch at most at a time; a value that cannot be decoded is a `schema_mismatch` naming its
/// column, a server error mid-stream is the server's error.
pub(super) struct WireRows<'c> {
    conn: &'c mut Conn,
    decoders: Vec<Decode>,
    names: Vec<String>,
    state: State,
    layout: Vec<Layout>,
    ready: Keyed,
}

impl<'c> WireRows<'c> {
    /// The rows of the statement just executed on `conn`, decoded by `decoders` and keyed
    /// by `keyed`.
    pub(super) fn new(
        conn: &'c mut Conn,
        decoders: Vec<Decode>,
        names: Vec<String>,
        keyed: Keyed,
    ) -> WireRows<'c> {
        WireRows {
            conn,
            decoders,
            names,
            state: State::Head,
            layout: Vec::new(),
            ready: keyed,
        }
    }

    /// Handles the complete payloads in the buffer, until a batch of rows waits.
    fn parse(&mut self) -> Result<(), RunError> {
        let mut at = 0;
        let buf = std::mem::take(&mut self.conn.buf);
        let result = loop {
            if matches!(self.state, State::Done) || self.ready.full() {
                break Ok(());
            }
            let Some((payload, used, _)) = payload_at(&buf[at..]) else {
                break Ok(());
            };
            at += used;
            if let Err(e) = self.take(&payload) {
                break Err(e);
            }
        };
        self.conn.buf = buf;
        self.conn.buf.advance(at);
        result
    }

    fn take(&mut self, p: &[u8]) -> Result<(), RunError> {
        let protocol = |e: WireError| e.into_run_error("query failed");
        match self.state {
            State::Head => match p.first() {
                Some(0xFF) => return Err(server_error(p).into_run_error("query failed")),
                Some(0x00) => self.state = State::Done,
                _ => {
                    let n = lenenc_int(&mut &p[..]).map_err(protocol)?;
                    if n != self.decoders.len() as u64 {
                        return Err(protocol(WireError::Protocol(format!(
                            "{n} columns where {} were described",
                            self.decoders.len()
                        ))));
                    }
                    self.state = if n == 0 {
                        State::ColumnsEnd
                    } else {
                        State::Columns(n)
                    };
                }
            },
            State::Columns(left) => {
                let def = ColumnDef::parse(p).map_err(protocol)?;
                self.layout.push(layout(&def).map_err(protocol)?);
                self.state = if left == 1 {
                    State::ColumnsEnd
                } else {
                    State::Columns(left - 1)
                };
            }
            State::ColumnsEnd => match p.first() {
                Some(0xFE) => self.state = State::Rows,
                Some(0xFF) => return Err(server_error(p).into_run_error("query failed")),
                _ => {
                    return Err(protocol(WireError::Protocol(
                        "expected the end of the columns".into(),
                    )));
                }
            },
            State::Rows => match p.first() {
                Some(0x00) => {
                    let (layout, decoders, names) = (&self.layout, &self.decoders, &self.names);
                    self.ready.decode(|values| {
                        decode_row(&p[1..], layout, decoders, values).map_err(|(i, e)| {
                            let name = names.get(i).map_or("?", String::as_str);
                            RunError::new(
                                ErrorKind::SchemaMismatch,
                                format!("cannot decode column `{name}`: {e}"),
                            )
                        })
                    })?;
                }
                // The EOF (or with CLIENT_DEPRECATE_EOF, an OK) that ends the rows.
                Some(0xFE) => self.state = State::Done,
                Some(0xFF) => return Err(server_error(p).into_run_error("query failed")),
                _ => return Err(protocol(WireError::Protocol("an unknown row".into()))),
            },
            State::Done => {}
        }
        Ok(())
    }
}

/// Decodes a row's values into `values` (empty), or says which column could not be decoded
/// and why.
fn decode_row(
    p: &[u8],
    layout: &[Layout],
    decoders: &[Decode],
    values: &mut Values,
) -> Result<(), (usize, String)> {
    let bitmap_len = (decoders.len() + 9) / 8;
    let truncated = |i: usize| (i, "a truncated row".to_string());
    let (bitmap, mut b) = p.split_at_checked(bitmap_len).ok_or_else(|| truncated(0))?;
    values.reserve_exact(decoders.len());
    for (i, (d, l)) in decoders.iter().zip(layout).enumerate() {
        let bit = i + 2;
        if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
            values.push(Value::Null);
            continue;
        }
        let len = match *l {
            Layout::Fixed(n) => n,
            Layout::Counted => 1 + usize::from(*b.first().ok_or_else(|| truncated(i))?),
            Layout::Lenenc => {
                let n = lenenc_int(&mut b).map_err(|_| truncated(i))?;
                usize::try_from(n).map_err(|_| truncated(i))?
            }
        };
        let (bytes, rest) = b.split_at_checked(len).ok_or_else(|| truncated(i))?;
        let value = match (*d, <[u8; 8]>::try_from(bytes)) {
            // A BIGINT, most keys: no length to look at nor `Result` to build. Kept beside
            // `decode` on purpose: that whole match inlined here costs 25 instructions a row
            // more (callgrind, key-only MariaDB check), and out of line a call and a `Result`.
            (Decode::Int, Ok(eight)) => Value::Int(i64::from_le_bytes(eight)),
            _ => decode(*d, bytes).map_err(|e| (i, e))?,
        };
        values.push(value);
        b = rest;
    }
    Ok(())
}

fn signed(b: &[u8]) -> Result<i64, String> {
    Ok(match b.len() {
        1 => i64::from(b[0] as i8),
        2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => i64::from(i32::from_le_bytes(b.try_into().unwrap_or_default())),
        8 => i64::from_le_bytes(b.try_into().unwrap_or_default()),
        n => return Err(format!("an integer of {n} bytes")),
    })
}

fn unsigned(b: &[u8]) -> Result<u64, String> {
    match b.len() {
        1..=8 => Ok((&b[..]).get_uint_le(b.len())),
        n => Err(format!("an integer of {n} bytes")),
    }
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("text that is not UTF-8: {e}"))
}

/// A counted date or date-time: length, year (2 bytes), month, day, then optionally hour,
/// minute, second and microseconds (4 bytes).
fn date_time(b: &[u8]) -> Result<chrono::NaiveDateTime, String> {
    let len = usize::from(b[0]);
    let b = &b[1..];
    if len < 4 {
        return Err("a zero date cannot be read".into());
    }
    let (y, m, d) = (u16::from_le_bytes([b[0], b[1]]), b[2], b[3]);
    let date = chrono::NaiveDate::from_ymd_opt(y.into(), m.into(), d.into())
        .ok_or_else(|| format!("server returned invalid date: {y}/{m}/{d}"))?;
    let (h, mi, s) = if len >= 7 {
        (b[4], b[5], b[6])
    } else {
        (0, 0, 0)
    };
    let micro = if len >= 11 {
        u32::from_le_bytes([b[7], b[8], b[9], b[10]])
    } else {
        0
    };
    let time = chrono::NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), micro)
        .ok_or_else(|| format!("server returned invalid time: {h}:{mi}:{s}.{micro:06}"))?;
    Ok(date.and_time(time))
}

/// A counted TIME: length, sign, days (4 bytes), hour, minute, second, then optionally
/// microseconds (4 bytes).
fn time(b: &[u8]) -> Result<TimeOfDay, String> {
    let len = usize::from(b[0]);
    let b = &b[1..];
    if len == 0 {
        return Ok(TimeOfDay::default());
    }
    if len != 8 && len != 12 {
        return Err(format!("expected 8 or 12 bytes for TIME value, got {len}"));
    }
    let days = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    let time = TimeOfDay {
        negative: b[0] != 0,
        hours: days.saturating_mul(24).saturating_add(u32::from(b[5])),
        minutes: b[6],
        seconds: b[7],
        micros: if len == 12 {
            u32::from_le_bytes([b[8], b[9], b[10], b[11]])
        } else {
            0
        },
    };
    // The driver's limit (MySQL's range), so that both paths read the same values.
    if (time.hours, time.minutes, time.seconds, time.micros) > (838, 59, 59, 0) {
        return Err(format!("a TIME beyond ±838:59:59: {time}"));
    }
    Ok(time)
}

/// One value in the binary protocol, as the driver's row path decodes it (`mysql::decode`).
fn decode(d: Decode, b: &[u8]) -> Result<Value, String> {
    Ok(match d {
        Decode::Bool => Value::Bool(signed(b)? != 0),
        Decode::Int => Value::Int(signed(b)?),
        Decode::UInt => {
            let v = unsigned(b)?;
            i64::try_from(v).map_or_else(|_| Value::Decimal(v.into()), Value::Int)
        }
        Decode::Float => Value::Double(
            f32::from_le_bytes(b.try_into().map_err(|_| "a FLOAT of other than 4 bytes")?).into(),
        ),
        Decode::Double => Value::Double(f64::from_le_bytes(
            b.try_into().map_err(|_| "a DOUBLE of other than 8 bytes")?,
        )),
        Decode::Decimal => Value::Decimal(utf8(b)?.parse::<Decimal>().map_err(|e| e.to_string())?),
        Decode::Text => Value::Text(utf8(b)?.into()),
        Decode::Binary => match std::str::from_utf8(b) {
            Ok(s) => Value::Text(s.into()),
            Err(_) => Value::Bytes(b.into()),
        },
        Decode::Timestamp | Decode::Datetime => {
            Value::Timestamp(timestamp_from_naive(date_time(b)?))
        }
        Decode::Date => Value::Timestamp(timestamp_from_date(date_time(b)?.date())),
        Decode::Time => Value::Text(time(b)?.to_string().into()),
    })
}

impl Stream for WireRows<'_> {
    type Item = sqlx::Result<Decoded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // What the buffer holds is taken before the socket is read: a whole batch may
            // have been left there, or the end of the rows.
            if let Err(e) = this.parse() {
                this.state = State::Done;
                this.ready.clear();
                return Poll::Ready(Some(Ok(Decoded::Failed(e))));
            }
            if let Some(rows) = this.ready.take() {
                return Poll::Ready(Some(Ok(rows)));
            }
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            let conn = &mut *this.conn;
            conn.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(sqlx::Error::Io(e)))),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(sqlx::Error::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

/// How a value of this column is laid out in a binary-protocol row.
fn layout(column: &ColumnDef) -> Result<Layout, WireError> {
    Ok(match column.type_code {
        0x08 => Layout::Fixed(8),
        0x03 | 0x09 => Layout::Fixed(4),
        0x02 | 0x0d => Layout::Fixed(2),
        0x01 => Layout::Fixed(1),
        0x04 => Layout::Fixed(4),
        0x05 => Layout::Fixed(8),
        0x07 | 0x0a | 0x0b | 0x0c => Layout::Counted,
        0x06 => Layout::Fixed(0),
        0x00 | 0x0f | 0x10 | 0xf5..=0xff => Layout::Lenenc,
        other => {
            return Err(WireError::Protocol(format!(
                "column `{}` has the unknown type 0x{other:02x}",
                column.name
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::timestamp_from_naive;

    #[test]
    fn binary_rows_skip_nulls_by_the_bitmap_and_read_each_layout() {
        // Columns: BIGINT, VARCHAR (NULL), DECIMAL, DATETIME, TIME.
        let layout = [
            Layout::Fixed(8),
            Layout::Lenenc,
            Layout::Lenenc,
            Layout::Counted,
            Layout::Counted,
        ];
        let decoders = [
            Decode::Int,
            Decode::Text,
            Decode::Decimal,
            Decode::Datetime,
            Decode::Time,
        ];
        // Null bitmap: (5 + 9) / 8 = 1 byte, column i at bit i + 2.
        let mut row = vec![1u8 << (1 + 2)];
        row.extend((-5i64).to_le_bytes());
        row.extend([5, b'4', b'9', b'.', b'9', b'0']);
        row.extend([7, 0xEA, 0x07, 11, 28, 10, 11, 12]);
        row.extend([8, 1, 1, 0, 0, 0, 2, 3, 4]);
        let mut values = Values::new();
        decode_row(&row, &layout, &decoders, &mut values).unwrap();
        assert_eq!(values[0], Value::Int(-5));
        assert_eq!(values[1], Value::Null);
        assert_eq!(values[2], Value::Decimal("49.90".parse().unwrap()));
        assert_eq!(
            values[3],
            Value::Timestamp(timestamp_from_naive(
                chrono::NaiveDate::from_ymd_opt(2026, 11, 28)
                    .unwrap()
                    .and_hms_opt(10, 11, 12)
                    .unwrap()
            ))
        );
        // Negative, one day and two hours.
        assert_eq!(values[4], Value::Text("-26:03:04".into()));
        // A row cut short names the column it stopped in.
        let cut = decode_row(&row[..12], &layout, &decoders, &mut Values::new());
        assert_eq!(cut.unwrap_err().0, 2);
    }
}
