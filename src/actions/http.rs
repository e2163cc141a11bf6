//! `http` actions: a request with a JSON body and an `Idempotency-Key` header. 2xx is done;
//! 409 and 422 mean what the rule says (`on_409`, `on_422`); any other status is tried again
//! (with the same key) until `repairs.max_attempts`. A request that was sent and got no
//! answer is ambiguous; one `outbound.allow` refuses fails at once, never sent. Values from a
//! row go only into the URL's path and query (percent-encoded) and the body, never into the
//! scheme, host or headers.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::template::{self, Body, percent_encode, pretty, render_body};
use super::{ActionKind, Checker, Configure, Fill, Targets};
use crate::diag::Diagnostics;
use crate::expr::{Env, Scope, Template};
use crate::lifecycle::repair::Attempt;
use crate::verdict::ActionSpec;
use crate::yaml::{self, OrderedMap, Shape};

#[derive(Debug, Deserialize)]
pub(crate) struct RawHttp {
    method: Option<Spanned<String>>,
    url: Spanned<String>,
    #[serde(default)]
    headers: OrderedMap<String>,
    json: Option<Spanned<serde_json::Value>>,
    on_409: Option<Spanned<String>>,
    on_422: Option<Spanned<String>>,
}

/// What a 409 or 422 answer to an HTTP action means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMeaning {
    /// The target says it is already done: the repair is applied.
    Applied,
    /// The target refuses: the repair failed, and is not retried.
    Failed,
}

/// A checked `http` action.
#[derive(Debug)]
pub struct Http {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Template strings inside; a string that is one `{{ expr }}` keeps the value's type.
    pub json: Option<serde_json::Value>,
    pub on_409: StatusMeaning,
    pub on_422: StatusMeaning,
}

/// What an `http` action sends for one key.
#[derive(Serialize, Deserialize)]
struct Values {
    url: String,
    body: Option<serde_json::Value>,
}

impl Configure for RawHttp {
    fn shape() -> Shape {
        Shape::of::<RawHttp>(vec![("headers", Shape::Any), ("json", Shape::Any)])
    }

    fn check(
        self,
        c: &Checker<'_>,
        ctx: &str,
        diags: &mut Diagnostics,
    ) -> Option<Arc<dyn ActionKind>> {
        let before = diags.len();
        let method = match &self.method {
            None => "POST".to_string(),
            Some(m) => {
                let up = m.value.to_ascii_uppercase();
                if !["POST", "PUT", "PATCH", "DELETE", "GET"].contains(&up.as_str()) {
                    diags.push(
                        c.file,
                        c.at(m),
                        format!(
                            "{ctx}: method `{}` is not one of POST, PUT, PATCH, DELETE, GET",
                            m.value
                        ),
                    );
                }
                up
            }
        };
        let url = c.expand(&self.url, "a repair URL", diags);
        c.template(&self.url, &format!("{ctx}: url"), diags);
        // The scheme and host must be there before any value is filled in.
        let prefix = url.split("{{").next().unwrap_or_default();
        if !(url.is_empty() || prefix.starts_with("http://") || prefix.starts_with("https://")) {
            diags.push(
                c.file,
                c.at(&self.url),
                format!("{ctx}: url must start with http:// or https://, before any {{{{…}}}}"),
            );
        } else if url.contains("{{") && !authority_ends(prefix) {
            // A value from a row must never choose where the request goes: only the path and
            // the query take templates.
            let offset = self.url.value.find("{{").unwrap_or_default();
            diags.push(
                c.file,
                yaml::pos_in_scalar(c.doc, &self.url, offset),
                format!(
                    "{ctx}: url takes {{{{…}}}} only in its path and query, never in the scheme, host or port: write the host out (`http://payments.internal/refunds/{{{{key}}}}`)"
                ),
            );
        }
        let mut headers = Vec::new();
        for (k, v) in self.headers.0 {
            if v.contains("{{") {
                diags.push(
                    c.file,
                    c.at(&k),
                    format!(
                        "{ctx}: header `{}` must not contain `{{{{…}}}}`: headers are the same for every repair",
                        k.value
                    ),
                );
            }
            if k.value.eq_ignore_ascii_case("idempotency-key") {
                diags.push(
                    c.file,
                    c.at(&k),
                    format!("{ctx}: Idempotency-Key is set by invariantd itself"),
                );
            }
            let value = yaml::expand_env(&v, c.env).unwrap_or_else(|missing| {
                diags.push(
                    c.file,
                    c.at(&k),
                    format!(
                        "{ctx}: header `{}`: environment variable {} is not set",
                        k.value,
                        missing.join(", ")
                    ),
                );
                String::new()
            });
            headers.push((k.value, value));
        }
        if let Some(j) = &self.json {
            c.json(j, &format!("{ctx}: json"), diags);
        }
        let meaning = |v: &Option<Spanned<String>>, what: &str, diags: &mut Diagnostics| match v {
            None => StatusMeaning::Failed,
            Some(s) => match s.value.as_str() {
                "applied" => StatusMeaning::Applied,
                "failed" => StatusMeaning::Failed,
                other => {
                    diags.push(
                        c.file,
                        c.at(s),
                        format!("{ctx}: {what} `{other}` is not one of applied, failed"),
                    );
                    StatusMeaning::Failed
                }
            },
        };
        let on_409 = meaning(&self.on_409, "on_409", diags);
        let on_422 = meaning(&self.on_422, "on_422", diags);
        (diags.len() == before).then(|| {
            Arc::new(Http {
                method,
                url,
                headers,
                json: self.json.map(|j| j.value),
                on_409,
                on_422,
            }) as Arc<dyn ActionKind>
        })
    }
}

/// Whether the literal start of a URL (up to its first `{{`) holds the whole authority: a `/`,
/// `?` or `#` follows a non-empty host after the scheme.
fn authority_ends(prefix: &str) -> bool {
    let rest = prefix.split_once("://").map_or("", |(_, r)| r);
    rest.find(['/', '?', '#']).is_some_and(|end| end > 0)
}

/// The URL and body compiled for a run.
#[derive(Debug)]
struct Request {
    url: Template,
    body: Option<Body>,
}

impl Fill for Request {
    fn fill(&self, env: &Env<'_>) -> Result<ActionSpec, String> {
        // `.` and `..` would be read as path steps however they are encoded.
        let dots = std::cell::Cell::new(false);
        let url = self
            .url
            .render_strict(env, |v, out| {
                dots.set(dots.get() || v == "." || v == "..");
                percent_encode(v, out)
            })
            .map_err(|e| format!("url: {e}"))?;
        if dots.get() {
            return Err(format!(
                "url: a value is `.` or `..`, which would change the path: {url}"
            ));
        }
        let body = self
            .body
            .as_ref()
            .map(|b| render_body(b, env))
            .transpose()?;
        super::spec("http", &Values { url, body })
    }
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

impl ActionKind for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn target_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    fn compile(&self, scope: &Scope<'_>, what: &str) -> Result<Box<dyn Fill>, Vec<String>> {
        let mut errors = Vec::new();
        let url = template::template(&self.url, scope, &format!("{what}: url"), &mut errors);
        let body = self
            .json
            .as_ref()
            .map(|j| template::body(j, scope, &format!("{what}: json"), &mut errors));
        match url {
            Some(url) if errors.is_empty() => Ok(Box::new(Request { url, body })),
            _ => Err(errors),
        }
    }

    fn describe(&self, spec: &ActionSpec) -> Result<String, String> {
        let Values { url, body } = super::values(spec)?;
        Ok(format!("{} {url}\n{}", self.method, pretty(&body))
            .trim_end()
            .to_string())
    }

    fn apply<'a>(
        &'a self,
        to: &'a Targets<'a>,
        spec: &'a ActionSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let Values { url, body } = match super::values(spec) {
                Ok(v) => v,
                Err(e) => return Attempt::Failed(e),
            };
            let method = match reqwest::Method::from_bytes(self.method.as_bytes()) {
                Ok(m) => m,
                Err(e) => return Attempt::Failed(format!("method {}: {e}", self.method)),
            };
            let mut request = match to.clients.http.request(method, &url) {
                Ok(r) => r.header("Idempotency-Key", key),
                Err(refused) => {
                    return Attempt::Failed(format!("{} {url}: {refused}", self.method));
                }
            };
            for (name, value) in &self.headers {
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

    fn as_any(&self) -> &dyn Any {
        self
    }
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
