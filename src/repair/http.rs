//! `http` actions: a request with a JSON body and an `Idempotency-Key` header. 2xx is done;
//! 409 and 422 mean what the rule says (`on_409`, `on_422`); any other status is tried again
//! (with the same key) until `repairs.max_attempts`. A request that was sent and got no
//! answer is ambiguous; one `outbound.allow` refuses fails at once, never sent.

use futures_util::future::BoxFuture;

use super::action::{Action, Attempt, mismatch};
use crate::rules::StatusMeaning;
use crate::verdict::ActionSpec;

pub struct Http<'a> {
    pub client: &'a crate::outbound::Client,
    pub method: &'a str,
    pub headers: &'a [(String, String)],
    pub on_409: StatusMeaning,
    pub on_422: StatusMeaning,
}

/// At most this many bytes of a target's answer are read and kept, for the repair's result:
/// enough to say why, never a whole page.
const BODY_SHOWN: usize = 200;

/// Where the start of a target's answer stands in a result (`« … »`): the API shows it only to
/// a caller with a token (`public_result`).
const ANSWER: &str = " — answer: «";
const ANSWER_END: char = '»';

/// A result as a caller without a token sees it: the status and everything else, without the
/// target's own words.
pub fn public_result(result: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = result.find(ANSWER) else {
        return result.into();
    };
    let from = start + ANSWER.len();
    let end = result[from..]
        .find(ANSWER_END)
        .map_or(result.len(), |e| from + e);
    format!("{}(shown with a token){}", &result[..from], &result[end..]).into()
}

/// The start of a response body, read no further than `BODY_SHOWN` bytes.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_SHOWN {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(BODY_SHOWN);
    let text = String::from_utf8_lossy(&bytes);
    crate::value::terminal_safe(text.trim()).replace(ANSWER_END, "\"")
}

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
            let mut request = match self.client.request(method, url) {
                Ok(r) => r.header("Idempotency-Key", key),
                Err(refused) => {
                    return Attempt::Failed(format!("{} {url}: {refused}", self.method));
                }
            };
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
                Err(e) => {
                    let what = match crate::outbound::refused_in(&e) {
                        Some(refused) => {
                            return Attempt::Failed(format!("{} {url}: {refused}", self.method));
                        }
                        None => format!("{} {url}", self.method),
                    };
                    return if e.is_builder() {
                        Attempt::Failed(format!("{what}: {e}"))
                    } else if e.is_connect() {
                        Attempt::Retry(format!("{what}: {e}"))
                    } else {
                        Attempt::Ambiguous(format!("{what}: sent, no answer: {e}"))
                    };
                }
            };
            let status = response.status();
            let shown = excerpt(response).await;
            let said = if shown.is_empty() {
                format!("{} {url} answered {status}", self.method)
            } else {
                format!(
                    "{} {url} answered {status}{ANSWER}{shown}{ANSWER_END}",
                    self.method
                )
            };
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

/// The request as an approver reads it.
pub(super) fn describe(method: &str, url: &str, body: &Option<serde_json::Value>) -> String {
    format!("{method} {url}\n{}", pretty(body))
        .trim_end()
        .to_string()
}

/// A JSON body as a person reads it; nothing for none.
pub(super) fn pretty(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::public_result;

    #[test]
    fn without_a_token_a_result_keeps_all_but_the_targets_words() {
        let r = "POST http://t/x answered 500 Internal Server Error — answer: «db password is hunter2» (gave up after 5 attempts)";
        assert_eq!(
            public_result(r),
            "POST http://t/x answered 500 Internal Server Error — answer: «(shown with a token)» (gave up after 5 attempts)"
        );
        assert_eq!(public_result("no answer"), "no answer");
    }
}
