//! The API's words, in one module that the server (`http`), the terminal reports (`report`)
//! and the CLI's client (`app`) share: every view the server answers with and every body it
//! takes, serialised by the server and read back, typed, by the CLI. Ids are strings
//! (JavaScript clients lose 64-bit integers), timestamps RFC 3339.

pub mod cluster;
pub mod repairs;
pub mod silences;
pub mod views;
