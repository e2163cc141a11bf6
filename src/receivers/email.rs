//! The `email` receiver: one text mail per notification over SMTP (lettre), with STARTTLS or
//! TLS as the `smtp` URL says (trusting a private CA's certificates from `ca_file` too), and
//! the password from the URL (environment) or a file. The
//! message id becomes the mail's `Message-ID`, so a mail system can drop a repeat. The
//! server's addresses are checked against `outbound.allow` before each send.

use futures_util::future::BoxFuture;
use lettre::message::{Mailbox, Message, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::send::{redact_url, url_origin};
use super::{Checker, Configure, Receiver, ReceiverKind, SEND_TIMEOUT, SendError, same_as};
use crate::diag::{Diagnostics, Pos};
use crate::notification::Notification;
use crate::outbound::Allowed;
use crate::value::Secrets;
use crate::yaml::{self, Shape};

#[derive(Debug, Deserialize)]
pub(super) struct RawEmail {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    from: Option<Spanned<String>>,
    smtp: Spanned<String>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

/// A checked `email` receiver.
#[derive(Clone, PartialEq)]
pub struct EmailConfig {
    pub to: Vec<String>,
    pub from: String,
    /// `smtp://` (plain, or STARTTLS with `?tls=required`) or `smtps://` (TLS), with the user
    /// and maybe the password; it may hold a secret, so it is never printed.
    pub smtp: String,
    /// A file holding the SMTP password (read when the receiver starts).
    pub password_file: Option<PathBuf>,
    /// PEM certificates to trust besides the system's, for a mail server with a private CA.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("smtp", &url_origin(&self.smtp))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Configure for RawEmail {
    fn shape() -> Shape {
        Shape::of::<RawEmail>(vec![])
    }

    fn check(
        self,
        c: &Checker<'_>,
        diags: &mut Diagnostics,
        secrets: &mut Secrets,
    ) -> Arc<dyn ReceiverKind> {
        let (e, what, path, at, env, base) = (self, c.what, c.path, c.at, c.env, c.base);
        let smtp = yaml::expand_spanned(&e.smtp, &format!("{what}.smtp"), path, 0, env, diags);
        secrets.add_url_password(&smtp);
        if !smtp.is_empty() {
            check_smtp_url(&smtp, what, yaml::pos(&e.smtp, 0), path, diags);
        }
        if e.to.is_empty() {
            diags.push(path, at, format!("{what}.to: at least one address"));
        }
        let mut to = Vec::new();
        for t in &e.to {
            let addr = yaml::expand_spanned(t, &format!("{what}.to"), path, 0, env, diags);
            check_address(&addr, &format!("{what}.to"), yaml::pos(t, 0), path, diags);
            to.push(addr);
        }
        let from = match &e.from {
            Some(f) => {
                let addr = yaml::expand_spanned(f, &format!("{what}.from"), path, 0, env, diags);
                check_address(&addr, &format!("{what}.from"), yaml::pos(f, 0), path, diags);
                addr
            }
            None => "invariantd <invariantd@localhost>".to_string(),
        };
        let password_file = e.password_file.as_ref().and_then(|f| {
            let file =
                yaml::expand_spanned(f, &format!("{what}.password_file"), path, 0, env, diags);
            (!file.is_empty()).then(|| base.join(file))
        });
        let ca_file = e.ca_file.as_ref().and_then(|f| {
            let file = yaml::expand_spanned(f, &format!("{what}.ca_file"), path, 0, env, diags);
            let plain = reqwest::Url::parse(&smtp)
                .is_ok_and(|u| u.scheme() == "smtp" && !u.query_pairs().any(|(k, _)| k == "tls"));
            if plain {
                diags.push(
                    path,
                    yaml::pos(f, 0),
                    format!(
                        "{what}.ca_file: the smtp URL uses no TLS (use smtps:// or ?tls=required)"
                    ),
                );
            }
            (!file.is_empty()).then(|| base.join(file))
        });
        Arc::new(EmailConfig {
            to,
            from,
            smtp,
            password_file,
            ca_file,
        })
    }
}

fn check_smtp_url(url: &str, what: &str, at: Pos, path: &Path, diags: &mut Diagnostics) {
    let ok = match reqwest::Url::parse(url) {
        Ok(u) => {
            matches!(u.scheme(), "smtp" | "smtps")
                && u.host().is_some()
                && u.query_pairs()
                    .all(|(k, v)| k != "tls" || matches!(v.as_ref(), "required" | "opportunistic"))
        }
        Err(_) => false,
    };
    if !ok {
        diags.push(
            path,
            at,
            format!(
                "{what}.smtp: `{}` is not an SMTP URL such as smtps://user@mail.example.com:465 or smtp://mail.example.com:587?tls=required",
                redact_url(url)
            ),
        );
    }
}

fn check_address(addr: &str, what: &str, at: Pos, path: &Path, diags: &mut Diagnostics) {
    if !addr.is_empty() && addr.parse::<lettre::message::Mailbox>().is_err() {
        diags.push(
            path,
            at,
            format!("{what}: `{addr}` is not an email address"),
        );
    }
}

impl ReceiverKind for EmailConfig {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn target(&self) -> &str {
        &self.smtp
    }

    fn build(&self, allow: &[Allowed]) -> Result<Box<dyn Receiver>, String> {
        Ok(Box::new(Email::new(self, allow)?))
    }

    fn same(&self, other: &dyn ReceiverKind) -> bool {
        same_as(self, other)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub struct Email {
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The SMTP server's host, checked against `outbound.allow` before each send.
    server: String,
    allow: Vec<Allowed>,
}

impl Email {
    pub fn new(config: &EmailConfig, allow: &[Allowed]) -> Result<Email, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp)
            .map_err(|e| format!("smtp URL: {e}"))?
            .timeout(Some(SEND_TIMEOUT));
        if let Some(file) = &config.password_file {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read password_file {}: {e}", file.display()))?;
            let user = reqwest::Url::parse(&config.smtp)
                .map(|u| u.username().to_string())
                .unwrap_or_default();
            if user.is_empty() {
                return Err("password_file is set but the smtp URL names no user".into());
            }
            builder = builder.credentials(Credentials::new(user, password.trim_end().into()));
        }
        if let Some(file) = &config.ca_file {
            builder = builder.tls(tls_with_ca(&config.smtp, file)?);
        }
        let parse = |a: &String| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("`{a}` is not an email address: {e}"))
        };
        let url = reqwest::Url::parse(&config.smtp).map_err(|e| format!("smtp URL: {e}"))?;
        Ok(Email {
            server: url.host_str().unwrap_or_default().to_string(),
            allow: allow.to_vec(),
            from: parse(&config.from)?,
            to: config.to.iter().map(parse).collect::<Result<_, _>>()?,
            transport: builder.build(),
        })
    }
}

/// The TLS the smtp URL asks for, trusting the certificates in `file` besides the system's.
fn tls_with_ca(smtp: &str, file: &std::path::Path) -> Result<Tls, String> {
    let pem =
        std::fs::read(file).map_err(|e| format!("cannot read ca_file {}: {e}", file.display()))?;
    let cert = Certificate::from_pem(&pem)
        .map_err(|e| format!("ca_file {}: not a PEM certificate: {e}", file.display()))?;
    let url = reqwest::Url::parse(smtp).map_err(|e| format!("smtp URL: {e}"))?;
    let params = TlsParameters::builder(url.host_str().unwrap_or_default().to_string())
        .add_root_certificate(cert)
        .build()
        .map_err(|e| format!("TLS: {e}"))?;
    let mode = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    Ok(match (url.scheme(), mode.as_deref()) {
        ("smtps", _) => Tls::Wrapper(params),
        (_, Some("opportunistic")) => Tls::Opportunistic(params),
        _ => Tls::Required(params),
    })
}

/// `<id@invariantd>`, with the id's characters kept to what a Message-ID allows.
fn message_id(id: &str) -> String {
    let local: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    format!("<{local}@invariantd>")
}

impl Receiver for Email {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            crate::outbound::check_server(&self.server, &self.allow)
                .await
                .map_err(|r| SendError::new(format!("SMTP server {}", r.0)))?;
            let mut builder = Message::builder()
                .from(self.from.clone())
                .subject(n.subject())
                .message_id(Some(message_id(&n.id)))
                .header(ContentType::TEXT_PLAIN);
            for to in &self.to {
                builder = builder.to(to.clone());
            }
            let mail = builder
                .body(n.text())
                .map_err(|e| SendError::new(format!("cannot build the mail: {e}")))?;
            self.transport
                .send(mail)
                .await
                .map(|_| ())
                .map_err(|e| SendError::new(format!("SMTP: {e}")))
        })
    }
}
