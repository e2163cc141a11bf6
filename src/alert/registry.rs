//! The one place that knows every kind of receiver: the receiver a config describes. A new
//! kind is its own file (beside `email.rs`, `webhook.rs`, `alertmanager.rs`) and one arm here.

use super::receiver::Receiver;
use crate::config::{ReceiverConfig, ReceiverKind};
use crate::outbound::Allowed;

/// The receiver a config describes, sending only where `allow` (`outbound.allow`) lets it.
/// Fails when a file it needs cannot be read.
pub fn build(config: &ReceiverConfig, allow: &[Allowed]) -> Result<Box<dyn Receiver>, String> {
    Ok(match &config.kind {
        ReceiverKind::Email(e) => Box::new(super::email::Email::new(e, allow)?),
        ReceiverKind::Webhook(w) => Box::new(super::webhook::Webhook::new(w, allow)?),
        ReceiverKind::Alertmanager(a) => {
            Box::new(super::alertmanager::Alertmanager::new(a, allow)?)
        }
    })
}
