//! MySQL's and MariaDB's client protocol, for full sweeps: rows of a prepared statement in
//! the binary protocol, decoded straight from the bytes received by the column types the query
//! was described with. It spares the per-row work of the driver's row stream (a row object with
//! its column metadata, an async generator step per row), which was most of a sweep's client
//! time; it is to MySQL what `postgres/copy.rs` is to PostgreSQL.
//!
//! It speaks only what a sweep needs: the connection phase over TCP or a Unix socket, with TLS
//! as the URL's `ssl-mode` and the server decide, as the driver would (`../tls.rs`), and the
//! `mysql_native_password` or `caching_sha2_password` plugin (the latter's full authentication
//! over TLS only); then `COM_QUERY` for session settings, `COM_STMT_PREPARE`,
//! `COM_STMT_EXECUTE` and `COM_QUIT`. Another authentication plugin is
//! `WireError::Unsupported`, said before any row, and the read goes through the driver
//! instead (see `mod.rs`); the rows of a statement are read by `rows.rs`.
//!
//! Packets: a 3-byte little-endian payload length and a sequence number, then the payload; a
//! payload of 2^24 − 1 bytes or more continues in the next packet.

use crate::config::MySqlLogin;
use crate::sources::tls::{self, Files, Io, Verify};
use crate::verdict::{ErrorKind, RunError};
use bytes::{Buf, BytesMut};
use sha1::Digest as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use std::borrow::Cow;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// `utf8mb4_general_ci`, the connection's character set until `SET NAMES` (as sqlx).
const INITIAL_CHARSET: u8 = 45;

/// How much is read from the socket at a time.
pub(super) const READ_CHUNK: usize = 64 * 1024;

// Capability flags.
const LONG_PASSWORD: u32 = 1;

const CONNECT_WITH_DB: u32 = 8;

const PROTOCOL_41: u32 = 512;

const SSL: u32 = 2048;

const TRANSACTIONS: u32 = 8192;

const SECURE_CONNECTION: u32 = 1 << 15;

const PLUGIN_AUTH: u32 = 1 << 19;

/// Why a wire read failed.
#[derive(Debug)]
pub(super) enum WireError {
    /// Something this reader does not speak; nothing was read yet.
    Unsupported(String),
    /// The server's error packet: its error number, SQLSTATE and message.
    Server {
        number: u16,
        state: String,
        message: String,
    },
    Io(std::io::Error),
    Protocol(String),
    /// TLS could not be set up as the URL asks (no TLS on the server, a bad certificate).
    Tls(String),
}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> WireError {
        WireError::Io(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Unsupported(why) => write!(f, "{why}"),
            WireError::Server {
                number,
                state,
                message,
            } => write!(f, "{message} ({number}, SQLSTATE {state})"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(e) => write!(f, "protocol error: {e}"),
            WireError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl WireError {
    /// As a `RunError` of a query, in the server's words (see `errors::db_error`).
    pub(super) fn into_run_error(self, what: &str) -> RunError {
        match self {
            WireError::Server { state, message, .. } => {
                crate::sources::errors::db_error(what, Some(&state), &message)
            }
            other => RunError::new(ErrorKind::QueryFailed, format!("{what}: {other}")),
        }
    }
}

/// One connection, authenticated.
pub(super) struct Conn {
    pub(super) io: Box<dyn Io>,
    pub(super) buf: BytesMut,
    seq: u8,
    /// The server's id of this connection, for `KILL QUERY`.
    pub thread: u32,
}

/// A column as a result set describes it.
#[derive(Debug, Clone)]
pub(super) struct ColumnDef {
    pub name: String,
    pub(super) type_code: u8,
    flags: u16,
    max_size: u32,
}

/// A prepared statement's id and result columns.
pub(super) struct Prepared {
    pub id: u32,
    pub columns: Vec<ColumnDef>,
}

impl Conn {
    /// Connects and authenticates as the URL says, with TLS where the driver would take it;
    /// an authentication plugin other than the two above is `Unsupported`.
    pub(super) async fn connect(
        options: &MySqlConnectOptions,
        login: &MySqlLogin,
    ) -> Result<Conn, WireError> {
        let io: Box<dyn Io> = match options.get_socket() {
            #[cfg(unix)]
            Some(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            #[cfg(not(unix))]
            Some(_) => return Err(WireError::Unsupported("a Unix socket".into())),
            None => {
                let tcp = tokio::net::TcpStream::connect((options.get_host(), options.get_port()))
                    .await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
        };
        let mut conn = Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            seq: 0,
            thread: 0,
        };
        conn.authenticate(options, login).await?;
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        options: &MySqlConnectOptions,
        login: &MySqlLogin,
    ) -> Result<(), WireError> {
        let greeting = self.packet().await?;
        let handshake = Handshake::parse(&greeting)?;
        let mode = options.get_ssl_mode();
        // As the driver decides: `preferred` takes TLS when the server offers it.
        let tls = match mode {
            MySqlSslMode::Disabled => false,
            MySqlSslMode::Preferred => handshake.capabilities & SSL != 0,
            _ if handshake.capabilities & SSL != 0 => true,
            _ => {
                return Err(WireError::Tls(
                    "the server does not offer TLS, which the URL's ssl-mode requires".into(),
                ));
            }
        };
        for needed in [PROTOCOL_41, SECURE_CONNECTION] {
            if handshake.capabilities & needed == 0 {
                return Err(WireError::Unsupported(
                    "the server speaks an older protocol".into(),
                ));
            }
        }
        self.thread = handshake.thread;
        let password = login.password.as_deref().unwrap_or_default();
        // A plugin we do not know is answered as the native one: the server then asks for
        // the user's own plugin by name.
        let mut plugin = match handshake.plugin.as_str() {
            "caching_sha2_password" => Plugin::CachingSha2,
            _ => Plugin::Native,
        };
        let mut nonce = handshake.nonce;
        let mut caps = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;
        let database = options.get_database().filter(|d| !d.is_empty());
        if database.is_some() {
            caps |= CONNECT_WITH_DB;
        }
        if tls {
            caps |= SSL;
        }
        caps &= handshake.capabilities | LONG_PASSWORD;
        let mut response = Vec::with_capacity(128);
        response.extend_from_slice(&caps.to_le_bytes());
        response.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
        response.push(INITIAL_CHARSET);
        response.extend_from_slice(&[0; 23]);
        if tls {
            // The SSL request is the response's head; the rest follows encrypted.
            self.write(&response).await?;
            self.start_tls(options, login).await?;
        }
        let scramble = plugin.scramble(password, &nonce);
        response.extend_from_slice(options.get_username().as_bytes());
        response.push(0);
        response.push(scramble.len() as u8);
        response.extend_from_slice(&scramble);
        if let Some(db) = database {
            response.extend_from_slice(db.as_bytes());
            response.push(0);
        }
        response.extend_from_slice(plugin.name().as_bytes());
        response.push(0);
        self.write(&response).await?;
        loop {
            let packet = self.packet().await?;
            match packet.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(server_error(&packet)),
                Some(0xFE) => {
                    // Switch to the plugin named, with a new nonce.
                    let rest = &packet[1..];
                    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    let name = String::from_utf8_lossy(&rest[..end]).into_owned();
                    plugin = match name.as_str() {
                        "mysql_native_password" => Plugin::Native,
                        "caching_sha2_password" => Plugin::CachingSha2,
                        other => {
                            return Err(WireError::Unsupported(format!(
                                "the authentication plugin {other}"
                            )));
                        }
                    };
                    nonce = rest.get(end + 1..).unwrap_or_default().to_vec();
                    if nonce.last() == Some(&0) {
                        nonce.pop();
                    }
                    self.write(&plugin.scramble(password, &nonce)).await?;
                }
                // caching_sha2_password: 3 is "the cached hash matched" (an OK follows), 4
                // asks for the password in full: over TLS as it is, else it would need the
                // server's RSA key.
                Some(0x01) if plugin == Plugin::CachingSha2 && packet.get(1) == Some(&3) => {}
                Some(0x01) if plugin == Plugin::CachingSha2 && packet.get(1) == Some(&4) && tls => {
                    let mut clear = password.as_bytes().to_vec();
                    clear.push(0);
                    self.write(&clear).await?;
                }
                Some(0x01) if plugin == Plugin::CachingSha2 => {
                    return Err(WireError::Unsupported(
                        "caching_sha2_password's full authentication".into(),
                    ));
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected packet while authenticating".into(),
                    ));
                }
            }
        }
    }

    /// Upgrades the connection to TLS, after the SSL request was sent.
    async fn start_tls(
        &mut self,
        options: &MySqlConnectOptions,
        login: &MySqlLogin,
    ) -> Result<(), WireError> {
        let verify = match options.get_ssl_mode() {
            MySqlSslMode::VerifyCa => Verify::Chain,
            MySqlSslMode::VerifyIdentity => Verify::ChainAndName,
            _ => Verify::Nothing,
        };
        let files = Files {
            ca: login.ssl_ca.as_deref().map(|p| (p, "ssl-ca")),
            cert: login.ssl_cert.as_deref().map(|p| (p, "ssl-cert")),
            key: login.ssl_key.as_deref().map(|p| (p, "ssl-key")),
        };
        let config = tls::client_config(verify, files).map_err(WireError::Tls)?;
        let closed = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        let plain = std::mem::replace(&mut self.io, Box::new(closed));
        self.io = tls::upgrade(plain, config, options.get_host())
            .await
            .map_err(WireError::Tls)?;
        Ok(())
    }

    /// Runs a statement without a result set (`SET …`, `START TRANSACTION …`).
    pub(super) async fn execute_sql(&mut self, sql: &str) -> Result<(), WireError> {
        self.command(0x03, sql.as_bytes()).await?;
        let packet = self.packet().await?;
        match packet.first() {
            Some(0x00) => Ok(()),
            Some(0xFF) => Err(server_error(&packet)),
            _ => Err(WireError::Protocol(
                "a statement without rows returned rows".into(),
            )),
        }
    }

    /// Prepares a statement and returns its result columns.
    pub(super) async fn prepare(&mut self, sql: &str) -> Result<Prepared, WireError> {
        self.command(0x16, sql.as_bytes()).await?;
        let ok = self.packet().await?;
        match ok.first() {
            Some(0x00) if ok.len() >= 9 => {}
            Some(0xFF) => return Err(server_error(&ok)),
            _ => return Err(WireError::Protocol("unexpected answer to PREPARE".into())),
        }
        let mut b = &ok[1..];
        let id = b.get_u32_le();
        let columns = b.get_u16_le();
        let params = b.get_u16_le();
        for _ in 0..params {
            self.packet().await?;
        }
        if params > 0 {
            self.eof().await?;
        }
        let mut defs = Vec::with_capacity(columns.into());
        for _ in 0..columns {
            defs.push(ColumnDef::parse(&self.packet().await?)?);
        }
        if columns > 0 {
            self.eof().await?;
        }
        Ok(Prepared { id, columns: defs })
    }

    /// Frees a prepared statement (the server does not answer).
    pub(super) async fn close_statement(&mut self, id: u32) -> Result<(), WireError> {
        self.command(0x19, &id.to_le_bytes()).await
    }

    /// Executes a prepared statement without parameters; its rows come through `rows`.
    pub(super) async fn execute(&mut self, id: u32) -> Result<(), WireError> {
        let mut body = [0u8; 9];
        body[..4].copy_from_slice(&id.to_le_bytes());
        // No cursor, one iteration.
        body[5..].copy_from_slice(&1u32.to_le_bytes());
        self.command(0x17, &body).await
    }

    /// Says goodbye, so the server does not log an aborted connection.
    pub(super) async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            self.command(0x01, &[]).await?;
            self.io.shutdown().await?;
            Ok::<_, WireError>(())
        })
        .await;
    }

    async fn command(&mut self, code: u8, body: &[u8]) -> Result<(), WireError> {
        self.seq = 0;
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(code);
        payload.extend_from_slice(body);
        self.write(&payload).await
    }

    /// Writes one payload, split into packets as the protocol requires.
    async fn write(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
        if chunks.peek().is_none() {
            out.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        while let Some(chunk) = chunks.next() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(chunk);
            if chunk.len() == MAX_PAYLOAD && chunks.peek().is_none() {
                out.extend_from_slice(&[0, 0, 0, self.seq]);
                self.seq = self.seq.wrapping_add(1);
            }
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Reads the next payload.
    async fn packet(&mut self) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some((payload, used, seq)) = payload_at(&self.buf) {
                let payload = payload.into_owned();
                self.buf.advance(used);
                self.seq = seq.wrapping_add(1);
                return Ok(payload);
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Reads the EOF packet that ends a list of column definitions.
    async fn eof(&mut self) -> Result<(), WireError> {
        let packet = self.packet().await?;
        match packet.first() {
            Some(0xFE) => Ok(()),
            Some(0xFF) => Err(server_error(&packet)),
            _ => Err(WireError::Protocol(
                "expected the end of the columns".into(),
            )),
        }
    }
}

/// The payload at the head of `buf` (joined, when it spans packets), the bytes it took and
/// its last sequence number; `None` until it has all arrived.
pub(super) fn payload_at(buf: &[u8]) -> Option<(Cow<'_, [u8]>, usize, u8)> {
    let header = |at: usize| -> Option<(usize, u8)> {
        let h = buf.get(at..at + 4)?;
        Some((
            usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            h[3],
        ))
    };
    let (len, seq) = header(0)?;
    if buf.len() < 4 + len {
        return None;
    }
    if len < MAX_PAYLOAD {
        return Some((Cow::Borrowed(&buf[4..4 + len]), 4 + len, seq));
    }
    let mut joined = buf[4..4 + len].to_vec();
    let mut at = 4 + len;
    loop {
        let (len, seq) = header(at)?;
        let part = buf.get(at + 4..at + 4 + len)?;
        joined.extend_from_slice(part);
        at += 4 + len;
        if len < MAX_PAYLOAD {
            return Some((Cow::Owned(joined), at, seq));
        }
    }
}

pub(super) fn server_error(packet: &[u8]) -> WireError {
    let mut b = packet.get(1..).unwrap_or_default();
    let number = if b.len() >= 2 { b.get_u16_le() } else { 0 };
    let state = if b.first() == Some(&b'#') && b.len() >= 6 {
        let state = String::from_utf8_lossy(&b[1..6]).into_owned();
        b = &b[6..];
        state
    } else {
        "HY000".to_string()
    };
    WireError::Server {
        number,
        state,
        message: String::from_utf8_lossy(b).into_owned(),
    }
}

/// The server's greeting (protocol version 10).
struct Handshake {
    thread: u32,
    capabilities: u32,
    nonce: Vec<u8>,
    plugin: String,
}

impl Handshake {
    fn parse(p: &[u8]) -> Result<Handshake, WireError> {
        let short = || WireError::Protocol("a short greeting".into());
        match p.first() {
            Some(10) => {}
            Some(0xFF) => return Err(server_error(p)),
            _ => {
                return Err(WireError::Unsupported(
                    "protocol version other than 10".into(),
                ));
            }
        }
        let version_end = p[1..].iter().position(|&b| b == 0).ok_or_else(short)? + 2;
        let mut b = p.get(version_end..).ok_or_else(short)?;
        if b.len() < 31 {
            return Err(short());
        }
        let thread = b.get_u32_le();
        let mut nonce = b[..8].to_vec();
        b.advance(9);
        let low = u32::from(b.get_u16_le());
        b.advance(3); // character set, status
        let high = u32::from(b.get_u16_le());
        let capabilities = low | high << 16;
        let nonce_len = usize::from(b.get_u8());
        b.advance(10);
        if capabilities & SECURE_CONNECTION != 0 {
            let n = nonce_len.saturating_sub(8).max(13).min(b.len());
            let part = &b[..n];
            nonce.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
            b.advance(n);
        }
        let plugin = if capabilities & PLUGIN_AUTH != 0 {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        } else {
            String::new()
        };
        Ok(Handshake {
            thread,
            capabilities,
            nonce,
            plugin,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugin {
    Native,
    CachingSha2,
}

impl Plugin {
    fn name(self) -> &'static str {
        match self {
            Plugin::Native => "mysql_native_password",
            Plugin::CachingSha2 => "caching_sha2_password",
        }
    }

    /// The password scrambled with the server's nonce; nothing for an empty password.
    fn scramble(self, password: &str, nonce: &[u8]) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        match self {
            // SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))
            Plugin::Native => {
                let once = sha1::Sha1::digest(password.as_bytes());
                let twice = sha1::Sha1::digest(once.as_slice());
                let mut h = sha1::Sha1::new();
                h.update(nonce);
                h.update(twice.as_slice());
                let mask = h.finalize();
                once.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
            }
            // SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)
            Plugin::CachingSha2 => {
                use sha2::Digest as _;
                let once = sha2::Sha256::digest(password.as_bytes());
                let twice = sha2::Sha256::digest(once);
                let mut h = sha2::Sha256::new();
                h.update(twice);
                h.update(nonce);
                let mask = h.finalize();
                once.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
            }
        }
    }
}

pub(super) fn lenenc_int(b: &mut &[u8]) -> Result<u64, WireError> {
    let short = || WireError::Protocol("a truncated length".into());
    let first = *b.first().ok_or_else(short)?;
    b.advance(1);
    let n = match first {
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        0xFB | 0xFF => return Err(WireError::Protocol("an unexpected NULL length".into())),
        v => return Ok(u64::from(v)),
    };
    if b.len() < n {
        return Err(short());
    }
    let v = b.get_uint_le(n);
    Ok(v)
}

fn lenenc_bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let len = usize::try_from(lenenc_int(b)?)
        .map_err(|_| WireError::Protocol("a length out of range".into()))?;
    if b.len() < len {
        return Err(WireError::Protocol("a truncated value".into()));
    }
    let (v, rest) = b.split_at(len);
    *b = rest;
    Ok(v)
}

impl ColumnDef {
    pub(super) fn parse(p: &[u8]) -> Result<ColumnDef, WireError> {
        let mut b = p;
        for _ in 0..4 {
            lenenc_bytes(&mut b)?; // catalog, schema, table, original table
        }
        let alias = lenenc_bytes(&mut b)?;
        let original = lenenc_bytes(&mut b)?;
        lenenc_int(&mut b)?; // length of the fixed fields
        if b.len() < 10 {
            return Err(WireError::Protocol("a truncated column definition".into()));
        }
        b.advance(2); // character set
        let max_size = b.get_u32_le();
        let type_code = b.get_u8();
        let flags = b.get_u16_le();
        // As the driver names columns: the alias, else the column's own name.
        let name = if alias.is_empty() { original } else { alias };
        Ok(ColumnDef {
            name: String::from_utf8_lossy(name).into_owned(),
            type_code,
            flags,
            max_size,
        })
    }

    /// The type's name as sqlx's `MySqlTypeInfo::name` gives it, so that one query is
    /// described the same whichever path reads it.
    pub(super) fn type_name(&self) -> &'static str {
        const UNSIGNED: u16 = 32;
        const BINARY: u16 = 128;
        const ENUM: u16 = 256;
        let binary = self.flags & BINARY != 0;
        let unsigned = self.flags & UNSIGNED != 0;
        let pick = |yes: &'static str, no: &'static str| if unsigned { yes } else { no };
        let text = |bin: &'static str, txt: &'static str| if binary { bin } else { txt };
        match self.type_code {
            0x01 if self.max_size == 1 => "BOOLEAN",
            0x01 => pick("TINYINT UNSIGNED", "TINYINT"),
            0x02 => pick("SMALLINT UNSIGNED", "SMALLINT"),
            0x03 => pick("INT UNSIGNED", "INT"),
            0x09 => pick("MEDIUMINT UNSIGNED", "MEDIUMINT"),
            0x08 => pick("BIGINT UNSIGNED", "BIGINT"),
            0x04 => "FLOAT",
            0x05 => "DOUBLE",
            0x06 => "NULL",
            0x07 => "TIMESTAMP",
            0x0a => "DATE",
            0x0b => "TIME",
            0x0c => "DATETIME",
            0x0d => "YEAR",
            0x10 => "BIT",
            0xf7 => "ENUM",
            0xf8 => "SET",
            0x00 | 0xf6 => "DECIMAL",
            0xff => "GEOMETRY",
            0xf5 => "JSON",
            0xfe if binary => "BINARY",
            0xfe if self.flags & ENUM != 0 => "ENUM",
            0xfe => "CHAR",
            0x0f | 0xfd => text("VARBINARY", "VARCHAR"),
            0xf9 => text("TINYBLOB", "TINYTEXT"),
            0xfc => text("BLOB", "TEXT"),
            0xfa => text("MEDIUMBLOB", "MEDIUMTEXT"),
            0xfb => text("LONGBLOB", "LONGTEXT"),
            _ => "UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(seq);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn payloads_wait_for_all_their_bytes_and_join_across_packets() {
        let one = packet(3, b"hello");
        assert_eq!(payload_at(&one[..2]), None);
        assert_eq!(payload_at(&one[..6]), None);
        let (p, used, seq) = payload_at(&one).unwrap();
        assert_eq!((&*p, used, seq), (&b"hello"[..], 9, 3));

        // A payload of 2^24 - 1 bytes or more goes on in the next packet.
        let big = vec![7u8; MAX_PAYLOAD];
        let mut split = packet(0, &big);
        split.extend(packet(1, b"tail"));
        assert_eq!(payload_at(&split[..split.len() - 1]), None);
        let (p, used, seq) = payload_at(&split).unwrap();
        assert_eq!((p.len(), used, seq), (MAX_PAYLOAD + 4, split.len(), 1));
        assert_eq!(&p[MAX_PAYLOAD..], b"tail");
        // Exactly 2^24 - 1 bytes: an empty packet ends it.
        let mut exact = packet(0, &big);
        exact.extend(packet(1, b""));
        let (p, used, _) = payload_at(&exact).unwrap();
        assert_eq!((p.len(), used), (MAX_PAYLOAD, exact.len()));
    }
}
