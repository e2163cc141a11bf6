//! MySQL's and MariaDB's types: which decoder each column type takes, what it means for the
//! key and the rule's type check, and decoding a value from the driver's row. `rows.rs` decodes
//! the same types from the binary protocol's bytes.

use sqlx::Row as _;
use sqlx::mysql::MySqlRow;

use crate::sources::request::KeyKind;
use crate::value::{
    Types, Value, timestamp_from_date, timestamp_from_datetime, timestamp_from_naive,
};

#[derive(Debug, Clone, Copy)]
pub(super) enum Decode {
    Bool,
    Int,
    UInt,
    Float,
    Double,
    Decimal,
    Text,
    /// Binary types, and text columns with a binary collation (which MySQL reports as binary):
    /// text when the bytes are UTF-8.
    Binary,
    Timestamp,
    Datetime,
    Date,
    Time,
}

/// What values each decoder produces (unsigned integers above 2^63 become decimals; binary
/// data is text when it is UTF-8).
pub(super) fn value_types(d: Decode) -> Types {
    match d {
        Decode::Bool => Types::BOOL,
        Decode::Int => Types::INT,
        Decode::UInt => Types::INT.with(Types::DECIMAL),
        Decode::Float | Decode::Double => Types::DOUBLE,
        Decode::Decimal => Types::DECIMAL,
        Decode::Text => Types::STRING,
        Decode::Binary => Types::STRING.with(Types::BYTES),
        Decode::Timestamp | Decode::Datetime | Decode::Date => Types::TIMESTAMP,
        Decode::Time => Types::COLUMN,
    }
}

pub(super) fn decoder(type_name: &str) -> Option<Decode> {
    Some(match type_name {
        "BOOLEAN" => Decode::Bool,
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => Decode::Int,
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => Decode::UInt,
        "FLOAT" => Decode::Float,
        "DOUBLE" => Decode::Double,
        "DECIMAL" => Decode::Decimal,
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "JSON" => Decode::Text,
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => Decode::Binary,
        "TIMESTAMP" => Decode::Timestamp,
        "DATETIME" => Decode::Datetime,
        "DATE" => Decode::Date,
        "TIME" => Decode::Time,
        "NULL" => Decode::Text,
        _ => return None,
    })
}

pub(super) fn key_kind(d: Decode) -> KeyKind {
    match d {
        Decode::Int | Decode::UInt => KeyKind::Int,
        Decode::Text | Decode::Binary => KeyKind::Text,
        _ => KeyKind::Unsupported,
    }
}

/// A TIME value: a time of day, or a duration of up to ±838:59:59 (MySQL allows both).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TimeOfDay {
    pub negative: bool,
    pub hours: u32,
    pub minutes: u8,
    pub seconds: u8,
    pub micros: u32,
}

/// `[-]HH:MM:SS`, with milliseconds or microseconds when there are any (as chrono writes a
/// time of day).
impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(
            f,
            "{sign}{:02}:{:02}:{:02}",
            self.hours, self.minutes, self.seconds
        )?;
        match self.micros {
            0 => Ok(()),
            us if us % 1000 == 0 => write!(f, ".{:03}", us / 1000),
            us => write!(f, ".{us:06}"),
        }
    }
}

pub(super) fn decode(row: &MySqlRow, i: usize, d: Decode) -> Result<Value, sqlx::Error> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
        v.map_or(Value::Null, f)
    }
    Ok(match d {
        Decode::Bool => opt(row.try_get_unchecked::<Option<i8>, _>(i)?, |v| {
            Value::Bool(v != 0)
        }),
        Decode::Int => opt(row.try_get_unchecked::<Option<i64>, _>(i)?, Value::Int),
        Decode::UInt => opt(
            row.try_get_unchecked::<Option<u64>, _>(i)?,
            |v| match i64::try_from(v) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Decimal(v.into()),
            },
        ),
        Decode::Float => opt(row.try_get_unchecked::<Option<f32>, _>(i)?, |v| {
            Value::Double(v.into())
        }),
        Decode::Double => opt(row.try_get_unchecked::<Option<f64>, _>(i)?, Value::Double),
        Decode::Decimal => opt(
            row.try_get_unchecked::<Option<rust_decimal::Decimal>, _>(i)?,
            Value::Decimal,
        ),
        Decode::Text => opt(row.try_get_unchecked::<Option<String>, _>(i)?, |s| {
            Value::Text(s.into())
        }),
        Decode::Binary => {
            opt(
                row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?,
                |b| match String::from_utf8(b) {
                    Ok(s) => Value::Text(s.into()),
                    Err(e) => Value::Bytes(e.into_bytes().into()),
                },
            )
        }
        Decode::Timestamp => opt(row.try_get_unchecked::<Option<DateTime<Utc>>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_datetime(t))
        }),
        Decode::Datetime => opt(row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?, |t| {
            Value::Timestamp(timestamp_from_naive(t))
        }),
        Decode::Date => opt(row.try_get_unchecked::<Option<NaiveDate>, _>(i)?, |d| {
            Value::Timestamp(timestamp_from_date(d))
        }),
        Decode::Time => opt(
            row.try_get_unchecked::<Option<sqlx::mysql::types::MySqlTime>, _>(i)?,
            |t| {
                let time = TimeOfDay {
                    // sqlx 0.9's `is_negative` answers `is_positive`.
                    negative: !t.is_positive(),
                    hours: t.hours(),
                    minutes: t.minutes(),
                    seconds: t.seconds(),
                    micros: t.microseconds(),
                };
                Value::Text(time.to_string().into())
            },
        ),
    })
}
