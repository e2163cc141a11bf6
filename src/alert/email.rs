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

use super::receiver::{Receiver, SEND_TIMEOUT, SendError};
use crate::config::EmailConfig;
use crate::notification::Notification;
use crate::outbound::Allowed;

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
