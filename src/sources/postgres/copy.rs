//! PostgreSQL's binary `COPY … TO STDOUT (FORMAT binary)`: the rows of a full sweep as one
//! stream of bytes, decoded here by the column types the query was described with. It spares
//! the per-row work of the extended query protocol (a row object, its offsets, a trip through
//! the driver's row stream), which was most of a sweep's client time. The bytes come from
//! the socket in large chunks (`wire.rs`), or through the driver's COPY stream, one message
//! at a time, where the sweep cannot speak the protocol itself.
//!
//! The format: an 11-byte signature, flags and a header extension; then per row a 16-bit
//! field count (-1 ends the data) and per field a 32-bit length (-1 is NULL) and its bytes in
//! the type's binary send format.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use rust_decimal::Decimal;

use super::decode::Decode;
use crate::sources::pump::{Decoded, Keyed};
use crate::value::{Value, Values};
use crate::verdict::{ErrorKind, RunError};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const DAY_US: i64 = 86_400_000_000;

/// Decodes the bytes of a binary COPY as they arrive, in pieces of any size, into keyed rows;
/// a value that cannot be decoded is a `schema_mismatch` naming its column.
pub(super) struct RowDecoder {
    decoders: Vec<Decode>,
    names: Vec<String>,
    /// An incomplete rest (or the header), kept until the bytes that complete it arrive.
    buf: BytesMut,
    header_read: bool,
    ended: bool,
    /// Rows decoded from the bytes received, not yet handed out.
    ready: Keyed,
}

impl RowDecoder {
    pub(super) fn new(decoders: Vec<Decode>, names: Vec<String>, keyed: Keyed) -> RowDecoder {
        RowDecoder {
            decoders,
            names,
            buf: BytesMut::new(),
            header_read: false,
            ended: false,
            ready: keyed,
        }
    }

    /// Takes a piece of COPY data. PostgreSQL sends each row in a message of its own: when
    /// nothing is left over from before, the piece's rows are decoded where they are, and only
    /// an incomplete rest is copied aside.
    pub(super) fn take(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.buf.is_empty() && self.header_read {
            let used = self.rows(chunk)?;
            self.buf.extend_from_slice(&chunk[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        self.parse()
    }

    /// The rows decoded and not yet handed out, if there are any.
    pub(super) fn take_decoded(&mut self) -> Option<Decoded> {
        self.ready.take()
    }

    /// Whether a batch of rows waits to be handed out.
    pub(super) fn full(&self) -> bool {
        self.ready.full()
    }

    /// Whether the end-of-data marker was read.
    pub(super) fn ended(&self) -> bool {
        self.ended
    }

    /// After an error: no more rows.
    pub(super) fn fail(&mut self) {
        self.ended = true;
        self.ready.clear();
    }

    /// Decodes the complete rows at the start of `data`; returns how many bytes they took.
    fn rows(&mut self, data: &[u8]) -> Result<usize, String> {
        let mut at = 0;
        while !self.ended {
            let Some(len) = row_len(&data[at..], self.decoders.len())? else {
                break;
            };
            let Some(len) = len else {
                self.ended = true;
                at += 2;
                break;
            };
            let (fields, decoders, names) = (&data[at + 2..at + len], &self.decoders, &self.names);
            self.ready
                .decode(|values| {
                    decode_row(fields, decoders, values).map_err(|(i, e)| {
                        let name = names.get(i).map_or("?", String::as_str);
                        RunError::new(
                            ErrorKind::SchemaMismatch,
                            format!("cannot decode column `{name}`: {e}"),
                        )
                    })
                })
                .map_err(|e| e.message)?;
            at += len;
        }
        Ok(at)
    }

    /// Decodes every complete row in the buffer.
    fn parse(&mut self) -> Result<(), String> {
        if !self.header_read {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(());
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err("not PostgreSQL's binary COPY format".into());
            }
            let extension =
                u32::from_be_bytes(self.buf[SIGNATURE.len() + 4..][..4].try_into().unwrap());
            let header = SIGNATURE.len() + 8 + extension as usize;
            if self.buf.len() < header {
                return Ok(());
            }
            self.buf.advance(header);
            self.header_read = true;
        }
        let buf = std::mem::take(&mut self.buf);
        let used = self.rows(&buf);
        self.buf = buf;
        self.buf.advance(used?);
        Ok(())
    }
}

/// The rows of a binary COPY read through the driver, one message at a time: the way when
/// the sweep cannot speak the protocol itself (`wire.rs`).
pub(super) struct CopyRows<'c> {
    chunks: BoxStream<'c, sqlx::Result<Bytes>>,
    rows: RowDecoder,
}

impl<'c> CopyRows<'c> {
    pub(super) fn new(
        chunks: BoxStream<'c, sqlx::Result<Bytes>>,
        rows: RowDecoder,
    ) -> CopyRows<'c> {
        CopyRows { chunks, rows }
    }
}

/// The length of the row at the head of `buf` with its field count: `None` when it has not
/// all arrived, `Some(None)` for the end-of-data marker.
fn row_len(buf: &[u8], columns: usize) -> Result<Option<Option<usize>>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(None));
    }
    if fields as usize != columns {
        return Err(format!(
            "a row of {fields} fields, where {columns} were described"
        ));
    }
    let mut at = 2;
    for _ in 0..columns {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
        at += 4 + len.max(0) as usize;
    }
    Ok((buf.len() >= at).then_some(Some(at)))
}

/// Decodes a row's values into `values` (empty), or says which column could not be decoded
/// and why.
fn decode_row(
    mut fields: &[u8],
    decoders: &[Decode],
    values: &mut Values,
) -> Result<(), (usize, String)> {
    values.reserve_exact(decoders.len());
    for (i, d) in decoders.iter().enumerate() {
        let len = fields.get_i32();
        if len < 0 {
            values.push(Value::Null);
            continue;
        }
        let (bytes, rest) = fields.split_at(len as usize);
        values.push(decode(*d, bytes).map_err(|e| (i, e))?);
        fields = rest;
    }
    Ok(())
}

fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("a {what} of {} bytes, not {N}", b.len()))
}

fn text(b: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(b)
        .map(|s| Value::Text(s.into()))
        .map_err(|e| format!("text that is not UTF-8: {e}"))
}

fn timestamp(b: &[u8]) -> Result<Value, String> {
    match i64::from_be_bytes(fixed(b, "timestamp")?) {
        i64::MAX | i64::MIN => Err("an infinite timestamp cannot be compared".into()),
        us => us
            .checked_add(PG_EPOCH_US)
            .map(Value::Timestamp)
            .ok_or_else(|| "a timestamp out of range".into()),
    }
}

/// One value in its type's binary send format, as the row path decodes it.
fn decode(d: Decode, b: &[u8]) -> Result<Value, String> {
    Ok(match d {
        Decode::Bool => Value::Bool(fixed::<1>(b, "bool")?[0] != 0),
        Decode::I16 => Value::Int(i16::from_be_bytes(fixed(b, "int2")?).into()),
        Decode::I32 => Value::Int(i32::from_be_bytes(fixed(b, "int4")?).into()),
        Decode::I64 => Value::Int(i64::from_be_bytes(fixed(b, "int8")?)),
        Decode::Oid => Value::Int(u32::from_be_bytes(fixed(b, "oid")?).into()),
        Decode::F32 => Value::Double(f32::from_be_bytes(fixed(b, "float4")?).into()),
        Decode::F64 => Value::Double(f64::from_be_bytes(fixed(b, "float8")?)),
        Decode::Numeric => Value::Decimal(numeric(b)?),
        Decode::Text => text(b)?,
        Decode::Uuid => Value::Text(uuid::Uuid::from_bytes(fixed(b, "uuid")?).to_string().into()),
        Decode::Timestamptz | Decode::Timestamp => timestamp(b)?,
        Decode::Date => match i32::from_be_bytes(fixed(b, "date")?) {
            i32::MAX | i32::MIN => return Err("an infinite date cannot be compared".into()),
            days => Value::Timestamp(PG_EPOCH_US + i64::from(days) * DAY_US),
        },
        Decode::Bytea => Value::Bytes(b.into()),
        // A version byte, then the JSON text.
        Decode::Jsonb => {
            Value::Text(String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into())
        }
    })
}

/// NUMERIC's send format: digit count, weight (of the first base-10,000 digit), sign, display
/// scale, then the base-10,000 digits. The same value and scale as the row path gives.
fn numeric(mut b: &[u8]) -> Result<Decimal, String> {
    if b.len() < 8 {
        return Err("a numeric shorter than its header".into());
    }
    let digits = b.get_u16() as usize;
    let weight = i32::from(b.get_i16());
    let sign = b.get_u16();
    let scale = b.get_u16();
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("NaN cannot be a decimal".into()),
        _ => return Err("an infinite numeric cannot be a decimal".into()),
    }
    if digits == 0 {
        return Ok(Decimal::ZERO);
    }
    if b.len() != digits * 2 {
        return Err("a numeric whose digits do not match its length".into());
    }
    let too_big = || "a numeric too large for a decimal (28 digits)".to_string();
    let mut mantissa: i128 = 0;
    for _ in 0..digits {
        mantissa = mantissa
            .checked_mul(10_000)
            .and_then(|m| m.checked_add(i128::from(b.get_i16())))
            .ok_or_else(too_big)?;
    }
    // The value is mantissa × 10,000^(weight - digits + 1).
    let mut exp10 = 4 * (weight - digits as i32 + 1);
    while exp10 > 0 {
        mantissa = mantissa.checked_mul(10).ok_or_else(too_big)?;
        exp10 -= 1;
    }
    let mut value =
        Decimal::try_from_i128_with_scale(mantissa, (-exp10) as u32).map_err(|_| too_big())?;
    if sign == 0x4000 {
        value.set_sign_negative(true);
    }
    value.rescale(u32::from(scale));
    Ok(value)
}

impl Stream for CopyRows<'_> {
    type Item = sqlx::Result<Decoded>;

    /// The messages the driver has at hand are taken until a batch is full (one row each,
    /// as PostgreSQL sends them); the rows go out when the driver would wait.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if (this.rows.full() || this.rows.ended)
                && let Some(rows) = this.rows.take_decoded()
            {
                return Poll::Ready(Some(Ok(rows)));
            }
            if this.rows.ended {
                // The rest of the exchange (the end of the COPY, the command's completion) is
                // read to its end, so the connection is ready for its next statement.
                return match this.chunks.as_mut().poll_next(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Some(Ok(_))) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                };
            }
            match this.chunks.as_mut().poll_next(cx) {
                Poll::Pending => {
                    return match this.rows.take_decoded() {
                        Some(rows) => Poll::Ready(Some(Ok(rows))),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                // The data ended before its end-of-data marker: rows would be missing.
                Poll::Ready(None) => {
                    if !this.rows.header_read && this.rows.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(sqlx::Error::Protocol(
                        "the COPY data ended before its end-of-data marker".into(),
                    ))));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Err(e) = this.rows.take(&chunk) {
                        this.rows.fail();
                        let e = RunError::new(ErrorKind::SchemaMismatch, e);
                        return Poll::Ready(Some(Ok(Decoded::Failed(e))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::request::KeyMode;
    use crate::value::Key;

    /// NUMERIC's send format for a value written as PostgreSQL would.
    fn send(sign: u16, weight: i16, scale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend((digits.len() as u16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(scale.to_be_bytes());
        for d in digits {
            b.extend(d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_with_their_display_scale() {
        let n = |sign, weight, scale, digits: &[i16]| {
            numeric(&send(sign, weight, scale, digits)).map(|d| d.to_string())
        };
        assert_eq!(n(0, 0, 2, &[49, 9000]).unwrap(), "49.90");
        assert_eq!(n(0x4000, 0, 2, &[12, 3400]).unwrap(), "-12.34");
        assert_eq!(n(0, 1, 0, &[1, 2]).unwrap(), "10002");
        assert_eq!(n(0, 2, 0, &[5]).unwrap(), "500000000");
        assert_eq!(n(0, -1, 5, &[12]).unwrap(), "0.00120");
        assert_eq!(n(0, 0, 3, &[]).unwrap(), "0");
        assert!(n(0xC000, 0, 0, &[]).unwrap_err().contains("NaN"));
        assert!(n(0, 10, 0, &[1]).unwrap_err().contains("too large"));
    }

    #[tokio::test]
    async fn rows_split_anywhere_decode_the_same() {
        let mut data = SIGNATURE.to_vec();
        data.extend([0; 8]);
        for (id, name) in [
            (Some(1i64), Some("a")),
            (Some(2), None),
            (None, Some("no key")),
            (Some(3), Some("ccc")),
        ] {
            data.extend(2i16.to_be_bytes());
            match id {
                Some(id) => {
                    data.extend(8i32.to_be_bytes());
                    data.extend(id.to_be_bytes());
                }
                None => data.extend((-1i32).to_be_bytes()),
            }
            match name {
                Some(n) => {
                    data.extend((n.len() as i32).to_be_bytes());
                    data.extend(n.as_bytes());
                }
                None => data.extend((-1i32).to_be_bytes()),
            }
        }
        data.extend((-1i16).to_be_bytes());
        for split in 1..data.len() {
            let chunks: Vec<sqlx::Result<Bytes>> = data
                .chunks(split)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let stream = CopyRows::new(
                Box::pin(futures_util::stream::iter(chunks)),
                RowDecoder::new(
                    vec![Decode::I64, Decode::Text],
                    vec!["id".into(), "name".into()],
                    Keyed::new(0, KeyMode::Int, &Default::default()),
                ),
            );
            let (mut rows, mut null_keys) = (Vec::new(), 0);
            for chunk in futures_util::StreamExt::collect::<Vec<_>>(stream).await {
                match chunk.unwrap() {
                    Decoded::Rows {
                        rows: r,
                        null_keys: n,
                    } => {
                        rows.extend(r);
                        null_keys += n;
                    }
                    Decoded::Failed(e) => panic!("{e}"),
                }
            }
            assert_eq!(null_keys, 1, "split every {split} bytes");
            let keys: Vec<Key> = rows.iter().map(|r| r.key.clone()).collect();
            assert_eq!(keys, [Key::Int(1), Key::Int(2), Key::Int(3)]);
            let rows: Vec<Values> = rows.into_iter().map(|r| r.values).collect();
            assert_eq!(rows.len(), 3, "split every {split} bytes");
            assert_eq!(rows[1][1], Value::Null);
            assert_eq!(rows[2][1], Value::Text("ccc".into()));
        }
    }
}
