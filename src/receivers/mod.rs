//! Alert receivers, one file each (`email`, `webhook`, `alertmanager`). A receiver owns its
//! configuration (its shape and checks, each error with file, line and column), how it is
//! built, its wire format and how it sends, and whether a firing alert must be sent to it
//! again (`resend_interval`). `config` picks a kind by its key through the externally tagged
//! `RawKind` that the `kinds!` list below makes: adding a receiver is its file, one `mod` line
//! and one line in that list. `send` holds what the HTTP receivers share.

mod alertmanager;
mod email;
mod send;
mod webhook;

use std::any::Any;
use std::fmt::{self, Debug};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};

pub use alertmanager::{Alertmanager, AlertmanagerConfig, DEFAULT_RESEND_INTERVAL};
pub use email::{Email, EmailConfig};
pub use send::{SEND_TIMEOUT, check_http_url};
pub use webhook::{Webhook, WebhookConfig, WebhookFormat};

use crate::diag::{Diagnostics, Pos};
use crate::notification::Notification;
use crate::outbound::Allowed;
use crate::value::Secrets;
use crate::yaml::{self, Shape};

/// Why a notification did not get through.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
}

impl SendError {
    pub fn new(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
        }
    }
}

/// Somewhere notifications go.
pub trait Receiver: Send + Sync {
    /// Delivers one notification. Sending the same notification (same `id`) twice must be
    /// harmless for the receiver: every format carries the id to deduplicate on.
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>>;
}

/// A configured receiver of one kind. Its `Debug` form never shows a secret.
pub trait ReceiverKind: Debug + Send + Sync {
    /// The key that selects the kind in `alerting.receivers` (`email`).
    fn kind(&self) -> &'static str;
    /// Where it sends (a URL, which may hold a secret: never printed), checked against
    /// `outbound.allow` at load.
    fn target(&self) -> &str;
    /// How often a firing alert must be sent again while it fires: for a receiver that
    /// forgets alerts it is not told about again. `None` for receivers told once.
    fn resend_interval(&self) -> Option<Duration> {
        None
    }
    /// The receiver, sending only where `allow` (`outbound.allow`) lets it. Fails when a file
    /// it needs cannot be read.
    fn build(&self, allow: &[Allowed]) -> Result<Box<dyn Receiver>, String>;
    /// Whether `other` is the same receiver, secrets included: a reload that changes any of
    /// it replaces the receiver.
    fn same(&self, other: &dyn ReceiverKind) -> bool;
    /// For `same` and for tests that read a kind's configuration.
    fn as_any(&self) -> &dyn Any;
}

/// `ReceiverKind::same` for a kind that compares with `==`.
fn same_as<T: PartialEq + 'static>(me: &T, other: &dyn ReceiverKind) -> bool {
    other.as_any().downcast_ref::<T>() == Some(me)
}

/// What a receiver's checks need besides its own fields.
pub struct Checker<'a> {
    /// The config file.
    pub path: &'a Path,
    /// The directory files are relative to.
    pub base: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// `alerting.receivers.NAME`, for messages.
    pub what: &'a str,
    /// Where the receiver's name is written.
    pub at: Pos,
}

impl Checker<'_> {
    /// A `url` field: expanded, and an http:// or https:// URL with a host.
    fn http_url(&self, url: &serde_saphyr::Spanned<String>, diags: &mut Diagnostics) -> String {
        let what = format!("{}.url", self.what);
        let expanded = yaml::expand_spanned(url, &what, self.path, 0, self.env, diags);
        if !expanded.is_empty() {
            check_http_url(&expanded, &what, yaml::pos(url, 0), self.path, diags);
        }
        expanded
    }
}

/// A kind's configuration as read from `alerting.receivers`.
trait Configure: DeserializeOwned {
    /// Its shape, for finding unknown fields.
    fn shape() -> Shape;
    /// Checks it, adding any URL password to `secrets` so that logs never show it. The
    /// receiver is returned even with errors, so that what else is wrong is reported too.
    fn check(
        self,
        c: &Checker<'_>,
        diags: &mut Diagnostics,
        secrets: &mut Secrets,
    ) -> Arc<dyn ReceiverKind>;
}

macro_rules! kinds {
    ($($name:ident => $raw:ty),* $(,)?) => {
        /// A kind's configuration, picked by its key.
        #[derive(Debug, Deserialize)]
        #[allow(non_camel_case_types)]
        enum RawKind {
            $($name($raw)),*
        }

        /// The keys of a receiver: its kind.
        pub const KINDS: &[&str] = &[$(stringify!($name)),*];

        impl RawKind {
            fn check(
                self,
                c: &Checker<'_>,
                diags: &mut Diagnostics,
                secrets: &mut Secrets,
            ) -> Arc<dyn ReceiverKind> {
                match self {
                    $(RawKind::$name(raw) => raw.check(c, diags, secrets)),*
                }
            }

            fn shapes() -> Vec<(&'static str, Shape)> {
                vec![$((stringify!($name), <$raw as Configure>::shape())),*]
            }
        }
    };
}

// The kinds a receiver may be: `key => its configuration`, in the order messages name them.
kinds! {
    email => email::RawEmail,
    webhook => webhook::RawWebhook,
    alertmanager => alertmanager::RawAlertmanager,
}

/// One receiver as written: its kinds (exactly one is valid). Other keys are left to the
/// unknown-field check, which says where they are.
#[derive(Debug)]
pub struct RawReceiver {
    kinds: Vec<RawKind>,
}

impl<'de> Deserialize<'de> for RawReceiver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawReceiver, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawReceiver;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a receiver: one of {}", crate::diag::or_list(KINDS))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReceiver, A::Error> {
                let mut kinds = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if KINDS.contains(&key.as_str()) {
                        kinds.push(map.next_value_seed(yaml::Tagged::<RawKind>::new(key))?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(RawReceiver { kinds })
            }
        }
        d.deserialize_map(V)
    }
}

/// The shape of one receiver, for finding unknown fields.
pub fn shape() -> Shape {
    Shape::Struct(KINDS, RawKind::shapes())
}

/// Checks one receiver; `None` when it is not exactly one kind.
pub fn check(
    raw: RawReceiver,
    c: &Checker<'_>,
    diags: &mut Diagnostics,
    secrets: &mut Secrets,
) -> Option<Arc<dyn ReceiverKind>> {
    let mut kinds = raw.kinds;
    match kinds.pop() {
        Some(kind) if kinds.is_empty() => Some(kind.check(c, diags, secrets)),
        _ => {
            diags.push(
                c.path,
                c.at,
                format!(
                    "{}: give exactly one of {}",
                    c.what,
                    crate::diag::or_list(KINDS)
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_never_print_their_secrets() {
        let email = EmailConfig {
            to: vec!["oncall@example.com".into()],
            from: "a@example.com".into(),
            smtp: "smtps://alerts:s3cr3t-pw@mail.example.com:465".into(),
            password_file: None,
            ca_file: None,
        };
        let hook = WebhookConfig {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX".into(),
            format: WebhookFormat::Slack,
        };
        let printed = format!("{email:?} {hook:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("SECRET"),
            "{printed}"
        );
        assert!(
            printed.contains("smtps://mail.example.com:465/…"),
            "{printed}"
        );
        assert!(printed.contains("https://hooks.slack.com/…"), "{printed}");
    }
}
