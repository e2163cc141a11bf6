//! `http` actions: a request with a JSON body and an `Idempotency-Key` header. 2xx is done;
//! 409 and 422 mean what the rule says (`on_409`, `on_422`); any other status is tried again
//! (with the same key) until `repairs.max_attempts`. A request that was sent and got no
//! answer is ambiguous.

use futures_util::future::BoxFuture;

use super::action::{Action, Attempt, mismatch};
use crate::rules::StatusMeaning;
use crate::verdict::ActionSpec;

pub struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub method: &'a str,
    pub headers: &'a [(String, String)],
    pub on_409: StatusMeaning,
    pub on_422: StatusMeaning,
}

/// The first bytes of a response body, for the repair's result.
const BODY_SHOWN: usize = 300;

impl Action for Http<'_> {
    fn apply<'a>(&'a self, spec: &'a ActionSpec, key: &'a str) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let ActionSpec::Http { url, body } = spec else {
                return mismatch(spec, "http");
            };
            let method = match reqwest::Method::from_bytes(self.method.as_bytes()) {
                Ok(m) => m,
                Err(e) => return Attempt::Failed(format!("method {}: {e}", self.method)),
            };
            let mut request = self
                .client
                .request(method, url)
                .header("Idempotency-Key", key);
            for (name, value) in self.headers {
                request = request.header(name, value);
            }
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_builder() => {
                    return Attempt::Failed(format!("{} {url}: {e}", self.method));
                }
                Err(e) if e.is_connect() => {
                    return Attempt::Retry(format!("{} {url}: {e}", self.method));
                }
                Err(e) => {
                    return Attempt::Ambiguous(format!(
                        "{} {url}: sent, no answer: {e}",
                        self.method
                    ));
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let shown: String = text.chars().take(BODY_SHOWN).collect();
            let said = format!("{} {url} answered {status}: {shown}", self.method);
            match status.as_u16() {
                200..=299 => Attempt::Applied(said),
                409 | 422 => {
                    let meaning = if status.as_u16() == 409 {
                        self.on_409
                    } else {
                        self.on_422
                    };
                    match meaning {
                        StatusMeaning::Applied => Attempt::Applied(said),
                        StatusMeaning::Failed => Attempt::Failed(said),
                    }
                }
                _ => Attempt::Retry(said),
            }
        })
    }
}
