//! PostgreSQL's types: which decoder each column type takes, what it means for the key and the
//! rule's type check, and decoding a value from the driver's row (binary format, types checked
//! once when the query was described). `copy.rs` decodes the same types from COPY's bytes.

use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind};
use sqlx::{Row as _, TypeInfo};

use crate::sources::request::KeyKind;
use crate::value::{
    Types, Value, timestamp_from_date, timestamp_from_datetime, timestamp_from_naive,
};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Decode {
    Bool,
    I16,
    I32,
    I64,
    Oid,
    F32,
    F64,
    Numeric,
    Text,
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
    Bytea,
    Jsonb,
}

pub(super) fn decoder(ty: &PgTypeInfo) -> Option<Decode> {
    Some(match ty.name() {
        "BOOL" => Decode::Bool,
        "INT2" => Decode::I16,
        "INT4" => Decode::I32,
        "INT8" => Decode::I64,
        "OID" => Decode::Oid,
        "FLOAT4" => Decode::F32,
        "FLOAT8" => Decode::F64,
        "NUMERIC" => Decode::Numeric,
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "\"CHAR\"" | "JSON" | "XML" => Decode::Text,
        "UUID" => Decode::Uuid,
        "TIMESTAMPTZ" => Decode::Timestamptz,
        "TIMESTAMP" => Decode::Timestamp,
        "DATE" => Decode::Date,
        "BYTEA" => Decode::Bytea,
        "JSONB" => Decode::Jsonb,
        name if name.eq_ignore_ascii_case("citext") => Decode::Text,
        _ => match ty.kind() {
            // An enum's binary form is its label.
            PgTypeKind::Enum(_) => Decode::Text,
            PgTypeKind::Domain(base) => return decoder(base),
            _ => return None,
        },
    })
}

pub(super) fn value_types(d: Decode) -> Types {
    match d {
        Decode::Bool => Types::BOOL,
        Decode::I16 | Decode::I32 | Decode::I64 | Decode::Oid => Types::INT,
        Decode::F32 | Decode::F64 => Types::DOUBLE,
        Decode::Numeric => Types::DECIMAL,
        Decode::Text | Decode::Uuid | Decode::Jsonb => Types::STRING,
        Decode::Timestamptz | Decode::Timestamp | Decode::Date => Types::TIMESTAMP,
        Decode::Bytea => Types::BYTES,
    }
}

pub(super) fn key_kind(d: Decode) -> KeyKind {
    match d {
        Decode::I16 | Decode::I32 | Decode::I64 | Decode::Oid => KeyKind::Int,
        Decode::Text | Decode::Uuid => KeyKind::Text,
        _ => KeyKind::Unsupported,
    }
}

/// Types were matched to decoders when the query was described, so the per-value type checks
/// of `try_get` are skipped (they were a measurable share of a sweep).
pub(super) fn decode(row: &PgRow, i: usize, d: Decode) -> Result<Value, sqlx::Error> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match d {
        Decode::Bool => opt(row.try_get_unchecked::<Option<bool>, _>(i)?, Value::Bool),
        Decode::I16 => opt(row.try_get_unchecked::<Option<i16>, _>(i)?, |v| {
            Value::Int(v.into())
        }),
        Decode::I32 => opt(row.try_get_unchecked::<Option<i32>, _>(i)?, |v| {
            Value::Int(v.into())
        }),
        Decode::I64 => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, Value::Int),
        Decode::Oid => opt(
            row.try_get_unchecked::<Option<sqlx::postgres::types::Oid>, _>(i)?,
            |v| Value::Int(v.0.into()),
        ),
        Decode::F32 => opt(row.try_get_unchecked::<Option<f32>, _>(i)?, |v| {
            Value::Double(v.into())
        }),
        Decode::F64 => opt(row.try_get_unchecked::<Option<f64>, _>(i)?, Value::Double),
        Decode::Numeric => opt(
            row.try_get_unchecked::<Option<rust_decimal::Decimal>, _>(i)?,
            Value::Decimal,
        ),
        Decode::Text => opt(row.try_get_unchecked::<Option<String>, _>(i)?, |s| {
            Value::Text(s.into())
        }),
        Decode::Uuid => opt(row.try_get_unchecked::<Option<uuid::Uuid>, _>(i)?, |u| {
            Value::Text(u.to_string().into())
        }),
        Decode::Timestamptz => opt(row.try_get_unchecked::<Option<DateTime<Utc>>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_datetime(t))
        }),
        Decode::Timestamp => opt(row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_naive(t))
        }),
        Decode::Date => opt(row.try_get_unchecked::<Option<NaiveDate>, _>(i)?, |d| {
            Value::Timestamp(timestamp_from_date(d))
        }),
        Decode::Bytea => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| {
            Value::Bytes(b.into())
        }),
        // JSONB's binary form is a version byte, then the JSON text.
        Decode::Jsonb => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| {
            Value::Text(String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into())
        }),
    })
}
