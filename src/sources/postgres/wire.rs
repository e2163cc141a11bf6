//! PostgreSQL's frontend/backend protocol, for the COPY of a full sweep: the rows arrive as
//! one `CopyData` message each, and reading them through the driver costs a message object,
//! a shared buffer and an async generator step per row — most of a narrow row's client time.
//! Here the socket is read 64 KiB at a time and each message's rows are decoded where they
//! lie (`copy.rs`).
//!
//! It speaks only what a sweep needs: the start-up over TCP or a Unix socket, with TLS as the
//! URL's `sslmode` and the server decide, as the driver would (`../tls.rs`); authentication by
//! trust, password, MD5 or SCRAM-SHA-256 (without channel binding); then simple queries and
//! `COPY … TO STDOUT`. A server that asks for anything else (SCRAM-SHA-256-PLUS only, GSS, a
//! password the URL and `PGPASSWORD` do not give) is `WireError::Unsupported`, said before any
//! row, and the sweep reads through the driver instead (see `mod.rs`).
//!
//! Messages: a type byte and a 4-byte big-endian length that counts itself, then the body
//! (the start-up message and the TLS request have no type byte).

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use bytes::{Buf, BufMut, BytesMut};
use futures_util::Stream;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::copy::RowDecoder;
use crate::config::PgLogin;
use crate::sources::errors::db_error;
use crate::sources::pump::Decoded;
use crate::sources::tls::{self, Files, Io, Verify};
use crate::value::hex;
use crate::verdict::{ErrorKind, RunError};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Protocol 3.0.
const PROTOCOL: i32 = 196_608;

const SSL_REQUEST: i32 = 80_877_103;

/// Why a wire read failed.
#[derive(Debug)]
pub(super) enum WireError {
    /// Something this reader does not speak; nothing was read yet.
    Unsupported(String),
    /// The server's error: its SQLSTATE and message.
    Server {
        code: String,
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
            WireError::Server { code, message } => write!(f, "{message} ({code})"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(m) => write!(f, "protocol error: {m}"),
            WireError::Tls(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl WireError {
    /// Whether the next connection would fail the same way: what the reader does not speak,
    /// TLS it cannot set up, or the server refusing the login (SQLSTATE class 28).
    pub(super) fn lasting(&self) -> bool {
        match self {
            WireError::Unsupported(_) | WireError::Tls(_) => true,
            WireError::Server { code, .. } => code.starts_with("28"),
            WireError::Io(_) | WireError::Protocol(_) => false,
        }
    }

    /// As a run's error, worded as the driver's errors are (`errors.rs`).
    pub(super) fn into_run_error(self, what: &str) -> RunError {
        match self {
            WireError::Server { code, message } => db_error(what, Some(&code), &message),
            other => RunError::new(ErrorKind::QueryFailed, format!("{what}: {other}")),
        }
    }
}

/// One connection, authenticated and ready for a query.
pub(super) struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

impl Conn {
    /// Connects and authenticates as the URL says, with TLS where the driver would take it.
    pub(super) async fn connect(
        options: &PgConnectOptions,
        login: &PgLogin,
        application_name: &str,
    ) -> Result<Conn, WireError> {
        let socket = options
            .get_socket()
            .map(|dir| dir.to_string_lossy().into_owned())
            .or_else(|| {
                let host = options.get_host();
                host.starts_with('/').then(|| host.to_string())
            });
        let io: Box<dyn Io> = match socket {
            #[cfg(unix)]
            Some(dir) => Box::new(
                tokio::net::UnixStream::connect(format!("{dir}/.s.PGSQL.{}", options.get_port()))
                    .await?,
            ),
            #[cfg(not(unix))]
            Some(_) => return Err(WireError::Unsupported("a Unix socket".into())),
            None => {
                let host = login.hostaddr.as_deref().unwrap_or(options.get_host());
                let tcp = tokio::net::TcpStream::connect((host, options.get_port())).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
        };
        let mut conn = Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        };
        conn.maybe_tls(options, login).await?;
        conn.start(options, application_name).await?;
        conn.authenticate(options, login).await?;
        // Then the server's parameters and its cancellation key, until it is ready. The key
        // is not kept: behind a pooler it names the pooler's session, not a server process.
        loop {
            if let (b'Z', _) = conn.message().await? {
                return Ok(conn);
            }
        }
    }

    /// Asks for TLS where the URL's `sslmode` says to, as the driver does: never with
    /// `disable` or `allow`, where the server grants it with `prefer`, or else an error.
    async fn maybe_tls(
        &mut self,
        options: &PgConnectOptions,
        login: &PgLogin,
    ) -> Result<(), WireError> {
        let mode = options.get_ssl_mode();
        let verify = match mode {
            PgSslMode::Disable | PgSslMode::Allow => return Ok(()),
            PgSslMode::Prefer | PgSslMode::Require => Verify::Nothing,
            PgSslMode::VerifyCa => Verify::Chain,
            PgSslMode::VerifyFull => Verify::ChainAndName,
        };
        let mut request = Vec::with_capacity(8);
        request.put_i32(8);
        request.put_i32(SSL_REQUEST);
        self.io.write_all(&request).await?;
        self.io.flush().await?;
        match self.io.read_u8().await? {
            b'S' => {}
            b'N' if matches!(mode, PgSslMode::Prefer) => return Ok(()),
            b'N' => return Err(WireError::Tls("the server does not support TLS".into())),
            other => {
                return Err(WireError::Protocol(format!(
                    "the answer {other:#04x} to the TLS request"
                )));
            }
        }
        let files = Files {
            ca: login.ssl_root_cert.as_deref().map(|p| (p, "sslrootcert")),
            cert: login.ssl_cert.as_deref().map(|p| (p, "sslcert")),
            key: login.ssl_key.as_deref().map(|p| (p, "sslkey")),
        };
        let config = tls::client_config(verify, files).map_err(WireError::Tls)?;
        let closed = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        let plain = std::mem::replace(&mut self.io, Box::new(closed));
        self.io = tls::upgrade(plain, config, options.get_host())
            .await
            .map_err(WireError::Tls)?;
        Ok(())
    }

    /// The start-up message, with the session settings the driver sends.
    async fn start(
        &mut self,
        options: &PgConnectOptions,
        application_name: &str,
    ) -> Result<(), WireError> {
        let mut params = vec![
            ("user", options.get_username()),
            ("DateStyle", "ISO, MDY"),
            ("client_encoding", "UTF8"),
            ("TimeZone", "UTC"),
            ("application_name", application_name),
        ];
        if let Some(database) = options.get_database() {
            params.push(("database", database));
        }
        if let Some(extra) = options.get_options() {
            params.push(("options", extra));
        }
        let mut body = Vec::new();
        body.put_i32(PROTOCOL);
        for (name, value) in params {
            put_cstr(&mut body, name)?;
            put_cstr(&mut body, value)?;
        }
        body.put_u8(0);
        let mut message = Vec::with_capacity(body.len() + 4);
        message.put_i32(body.len() as i32 + 4);
        message.extend_from_slice(&body);
        self.io.write_all(&message).await?;
        self.io.flush().await?;
        Ok(())
    }

    async fn authenticate(
        &mut self,
        options: &PgConnectOptions,
        login: &PgLogin,
    ) -> Result<(), WireError> {
        let password = || {
            login.password.as_deref().ok_or_else(|| {
                WireError::Unsupported(
                    "the server asks for a password that the URL and PGPASSWORD do not give".into(),
                )
            })
        };
        let (tag, mut body) = self.message().await?;
        if tag != b'R' || body.len() < 4 {
            return Err(WireError::Protocol(format!(
                "a message {:?} where authentication was expected",
                tag as char
            )));
        }
        match body.get_i32() {
            0 => Ok(()),
            3 => {
                let mut response = Vec::new();
                put_cstr(&mut response, password()?)?;
                self.send(b'p', &response).await?;
                self.auth_ok().await
            }
            5 if body.len() >= 4 => {
                let salt = &body[..4];
                let inner = hex(&md5::Md5::digest(
                    [password()?.as_bytes(), options.get_username().as_bytes()].concat(),
                ));
                let outer = hex(&md5::Md5::digest([inner.as_bytes(), salt].concat()));
                let mut response = Vec::new();
                put_cstr(&mut response, &format!("md5{outer}"))?;
                self.send(b'p', &response).await?;
                self.auth_ok().await
            }
            10 => {
                let mechanisms: Vec<String> = body[..]
                    .split(|b| *b == 0)
                    .filter(|m| !m.is_empty())
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(WireError::Unsupported(format!(
                        "the SASL mechanisms {}",
                        mechanisms.join(", ")
                    )));
                }
                self.scram(password()?).await?;
                self.auth_ok().await
            }
            other => Err(WireError::Unsupported(format!(
                "the authentication method {other} (by number)"
            ))),
        }
    }

    /// SCRAM-SHA-256 (RFC 5802, 7677) without channel binding, as the driver's default: the
    /// user name is the start-up's, so the client's first message leaves it empty.
    async fn scram(&mut self, password: &str) -> Result<(), WireError> {
        let password = stringprep::saslprep(password)
            .map_err(|_| WireError::Unsupported("a password SASLprep refuses".into()))?
            .into_owned();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let first_bare = format!("n=,r={nonce}");
        let first = format!("n,,{first_bare}");
        let mut initial = Vec::new();
        put_cstr(&mut initial, "SCRAM-SHA-256")?;
        initial.put_i32(first.len() as i32);
        initial.extend_from_slice(first.as_bytes());
        self.send(b'p', &initial).await?;

        let server_first = self.sasl(11).await?;
        let attr = |message: &str, name: char| {
            message
                .split(',')
                .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| WireError::Protocol(format!("SCRAM: no {name}= from the server")))
        };
        let server_nonce = attr(&server_first, 'r')?;
        if !server_nonce.starts_with(&nonce) {
            return Err(WireError::Protocol(
                "SCRAM: the server's nonce is not ours".into(),
            ));
        }
        let salt = BASE64_STANDARD
            .decode(attr(&server_first, 's')?)
            .map_err(|e| WireError::Protocol(format!("SCRAM salt: {e}")))?;
        let iterations: u32 = attr(&server_first, 'i')?
            .parse()
            .map_err(|e| WireError::Protocol(format!("SCRAM iterations: {e}")))?;
        // The server sets the iterations (4,096 by default, up to 2^31 since PostgreSQL 16):
        // worked out beside the runtime's threads, which other reads share.
        let salted = tokio::task::spawn_blocking(move || {
            salted_password(password.as_bytes(), &salt, iterations)
        })
        .await
        .map_err(|e| WireError::Protocol(format!("SCRAM: {e}")))?;
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        // "biws" is "n,," in base64: no channel binding.
        let final_bare = format!("c=biws,r={server_nonce}");
        let auth_message = format!("{first_bare},{server_first},{final_bare}");
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        let last = format!("{final_bare},p={}", BASE64_STANDARD.encode(proof));
        self.send(b'p', last.as_bytes()).await?;

        let server_final = self.sasl(12).await?;
        let expected = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        match attr(&server_final, 'v') {
            Ok(v) if BASE64_STANDARD.decode(&v).ok().as_deref() == Some(&expected[..]) => Ok(()),
            _ => Err(WireError::Protocol(
                "SCRAM: the server did not prove that it knows the password".into(),
            )),
        }
    }

    /// The body of the server's SASL message of type `kind` (11: continue, 12: final).
    async fn sasl(&mut self, kind: i32) -> Result<String, WireError> {
        let (tag, mut body) = self.message().await?;
        if tag != b'R' || body.len() < 4 || body.get_i32() != kind {
            return Err(WireError::Protocol("SCRAM: an unexpected message".into()));
        }
        String::from_utf8(body.to_vec())
            .map_err(|_| WireError::Protocol("SCRAM: a message that is not UTF-8".into()))
    }

    async fn auth_ok(&mut self) -> Result<(), WireError> {
        match self.message().await? {
            (b'R', body) if body[..] == [0, 0, 0, 0] => Ok(()),
            (tag, _) => Err(WireError::Protocol(format!(
                "a message {:?} where the end of authentication was expected",
                tag as char
            ))),
        }
    }

    /// Runs statements to the end; the first column of the first row any of them returned,
    /// as text.
    pub(super) async fn execute(&mut self, sql: &str) -> Result<Option<String>, WireError> {
        self.query(sql).await?;
        let mut failed = None;
        let mut first = None;
        loop {
            match self.message().await {
                Ok((b'Z', _)) => return failed.map_or(Ok(first), Err),
                Ok((b'D', body)) => first = first.or_else(|| first_field(&body)),
                Ok((b'C' | b'I' | b'T', _)) => {}
                Ok((tag, _)) => {
                    return Err(WireError::Protocol(format!(
                        "a message {:?} from a simple query",
                        tag as char
                    )));
                }
                Err(e @ WireError::Server { .. }) => failed = failed.or(Some(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts `COPY … TO STDOUT`: its rows, decoded by `rows`, once the server has begun.
    pub(super) async fn copy_out(
        mut self,
        sql: &str,
        rows: RowDecoder,
    ) -> Result<CopyOut, WireError> {
        self.query(sql).await?;
        match self.message().await? {
            (b'H', _) => Ok(CopyOut {
                conn: self,
                rows,
                finished: false,
            }),
            (tag, _) => Err(WireError::Protocol(format!(
                "a message {:?} where the COPY's start was expected",
                tag as char
            ))),
        }
    }

    async fn query(&mut self, sql: &str) -> Result<(), WireError> {
        let mut body = Vec::with_capacity(sql.len() + 1);
        put_cstr(&mut body, sql)?;
        self.send(b'Q', &body).await
    }

    async fn send(&mut self, tag: u8, body: &[u8]) -> Result<(), WireError> {
        let mut message = Vec::with_capacity(body.len() + 5);
        message.put_u8(tag);
        message.put_i32(body.len() as i32 + 4);
        message.extend_from_slice(body);
        self.io.write_all(&message).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next message that matters, with its type; notices and parameter changes are
    /// passed over, an error is `WireError::Server`.
    async fn message(&mut self) -> Result<(u8, BytesMut), WireError> {
        loop {
            let len = loop {
                match frame(&self.buf)? {
                    Some(len) => break len,
                    None => {
                        self.buf.reserve(READ_CHUNK);
                        if self.io.read_buf(&mut self.buf).await? == 0 {
                            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                        }
                    }
                }
            };
            let mut message = self.buf.split_to(len);
            let tag = message[0];
            message.advance(5);
            match tag {
                b'N' | b'S' | b'A' => continue,
                b'E' => return Err(server_error(&message)),
                _ => return Ok((tag, message)),
            }
        }
    }
}

/// The whole length of the message at the head of `buf` (type byte included), once it has
/// all arrived.
fn frame(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len < 4 {
        return Err(WireError::Protocol(format!("a message of length {len}")));
    }
    Ok((buf.len() > len).then_some(len + 1))
}

/// The first field of a `DataRow`, as text; `None` when it is NULL.
fn first_field(mut body: &[u8]) -> Option<String> {
    if body.len() < 6 || body.get_i16() < 1 {
        return None;
    }
    let len = usize::try_from(body.get_i32()).ok()?;
    body.get(..len)
        .map(|text| String::from_utf8_lossy(text).into_owned())
}

/// An `ErrorResponse`'s code and message.
fn server_error(body: &[u8]) -> WireError {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        let Some((&kind, text)) = field.split_first() else {
            continue;
        };
        match kind {
            b'C' => code = String::from_utf8_lossy(text).into_owned(),
            b'M' => message = String::from_utf8_lossy(text).into_owned(),
            _ => {}
        }
    }
    WireError::Server { code, message }
}

fn put_cstr(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.as_bytes().contains(&0) {
        return Err(WireError::Unsupported(
            "a setting with a NUL character".into(),
        ));
    }
    out.extend_from_slice(s.as_bytes());
    out.put_u8(0);
    Ok(())
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SCRAM's `Hi`: PBKDF2 with HMAC-SHA-256, one block.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

/// The rows of a `COPY … TO STDOUT`, read from the socket in large chunks: every complete
/// message in what has arrived is taken at once, its rows decoded where they lie.
pub(super) struct CopyOut {
    conn: Conn,
    rows: RowDecoder,
    /// The server said it is ready again: the COPY and its command are over.
    finished: bool,
}

impl CopyOut {
    /// Says goodbye once the COPY is over, so the server does not log a lost connection.
    pub(super) async fn terminate(&mut self) {
        let io = &mut self.conn.io;
        let goodbye = async {
            io.write_all(&[b'X', 0, 0, 0, 4]).await?;
            io.flush().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), goodbye).await;
    }

    /// Takes the complete messages that have arrived, until a batch of rows waits to be
    /// handed out (a chunk of narrow rows holds thousands; the rest wait in the chunk, where
    /// they take less room); whether any was taken.
    fn take_messages(&mut self) -> Result<bool, RunError> {
        let mut at = 0;
        let buf = &self.conn.buf;
        let result = loop {
            if self.rows.full() {
                break Ok(());
            }
            let Some(len) = frame(&buf[at..]).map_err(|e| e.into_run_error("query failed"))? else {
                break Ok(());
            };
            let message = &buf[at..at + len];
            at += len;
            match message[0] {
                b'd' => {
                    if let Err(e) = self.rows.take(&message[5..]) {
                        break Err(RunError::new(ErrorKind::SchemaMismatch, e));
                    }
                }
                // The end of the data, the command's completion, notices.
                b'c' | b'C' | b'N' | b'S' | b'A' => {}
                b'Z' => {
                    self.finished = true;
                    break Ok(());
                }
                b'E' => break Err(server_error(&message[5..]).into_run_error("query failed")),
                other => {
                    break Err(WireError::Protocol(format!(
                        "a message {:?} inside COPY data",
                        other as char
                    ))
                    .into_run_error("query failed"));
                }
            }
        };
        self.conn.buf.advance(at);
        result.map(|()| at > 0)
    }
}

impl Stream for CopyOut {
    type Item = sqlx::Result<Decoded>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(rows) = this.rows.take_decoded() {
                return Poll::Ready(Some(Ok(rows)));
            }
            if this.finished {
                if !this.rows.ended() {
                    return Poll::Ready(Some(Err(sqlx::Error::Protocol(
                        "the COPY data ended in the middle of a row".into(),
                    ))));
                }
                return Poll::Ready(None);
            }
            match this.take_messages() {
                Err(e) => {
                    this.finished = true;
                    this.rows.fail();
                    return Poll::Ready(Some(Ok(Decoded::Failed(e))));
                }
                Ok(true) => continue,
                Ok(false) => {}
            }
            this.conn.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.conn.io), cx, &mut this.conn.buf)
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(sqlx::Error::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(sqlx::Error::Io(e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil".
    #[test]
    fn scram_proof_matches_the_rfc_example() {
        let salt = BASE64_STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(b"pencil", &salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(client_key);
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                    r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                    c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        assert_eq!(
            BASE64_STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server = hmac(&hmac(&salted, b"Server Key"), auth.as_bytes());
        assert_eq!(
            BASE64_STANDARD.encode(server),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_data_rows_first_field_is_read_as_text() {
        let row = |fields: &[Option<&str>]| {
            let mut body = Vec::new();
            body.put_i16(fields.len() as i16);
            for field in fields {
                match field {
                    Some(text) => {
                        body.put_i32(text.len() as i32);
                        body.extend_from_slice(text.as_bytes());
                    }
                    None => body.put_i32(-1),
                }
            }
            body
        };
        assert_eq!(
            first_field(&row(&[Some("4242"), Some("x")])),
            Some("4242".into())
        );
        assert_eq!(first_field(&row(&[None])), None);
        assert_eq!(first_field(&row(&[])), None);
        // A length past the end of the message.
        assert_eq!(first_field(&[0, 1, 0, 0, 0, 9, b'1']), None);
    }

    #[test]
    fn frames_wait_for_their_whole_message() {
        let message = [b'd', 0, 0, 0, 6, 1, 2];
        for cut in 0..message.len() {
            assert_eq!(frame(&message[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(frame(&message).unwrap(), Some(7));
        assert!(frame(&[b'd', 0, 0, 0, 3]).is_err());
    }
}
