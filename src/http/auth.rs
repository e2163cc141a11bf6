//! Bearer tokens on the API: every request that changes something needs a token from
//! `auth.tokens_file`, and so does every read when `auth.read: token`. A request without a
//! valid token gets 401 with `WWW-Authenticate: Bearer`; the caller's name rides on the request
//! for the handler to record.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::context::Handle;

/// Who made the request: the name of their token.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Reads need a token only with `auth.read: token`.
pub async fn reader(State(handle): State<Arc<Handle>>, request: Request, next: Next) -> Response {
    if handle.current().config.auth.read_requires_token {
        changer(State(handle), request, next).await
    } else {
        next.run(request).await
    }
}

/// Changes always need a token.
pub async fn changer(
    State(handle): State<Arc<Handle>>,
    mut request: Request,
    next: Next,
) -> Response {
    let ctx = handle.current();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = presented
        .and_then(|t| ctx.tokens.who(t))
        .map(str::to_string);
    let no_tokens = ctx.tokens.is_empty();
    drop(ctx);
    match (caller, presented) {
        (Some(name), _) => {
            request.extensions_mut().insert(Caller(name));
            next.run(request).await
        }
        (None, presented) => {
            let message = if no_tokens {
                "this needs a bearer token, and none is configured (auth.tokens_file)"
            } else if presented.is_some() {
                "the bearer token is not valid"
            } else {
                "this needs a bearer token: Authorization: Bearer <token>"
            };
            tracing::warn!(path = %request.uri().path(), "Refused a request without a valid token.");
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"invariantd\""),
            );
            response
        }
    }
}
