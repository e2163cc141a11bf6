//! Bearer tokens on the API: each endpoint names the role it needs (`super::table`); every
//! request that changes something needs a token of that role from `auth.tokens_file`, and so
//! does every read when `auth.read: token`. A request without a valid token gets 401 with
//! `WWW-Authenticate: Bearer`, one whose token's role is too low 403; the caller's name rides
//! on the request for the handler to record.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::Role;
use crate::context::Handle;

/// Who made the request: the name of their token.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Lets a request through when its token's role is `role` or above. Reads (`Role::Read`) need
/// a token only with `auth.read: token`. No valid token: 401 with `WWW-Authenticate: Bearer`;
/// a valid token of a lesser role: 403, saying which role is needed.
pub async fn require(
    State((handle, role)): State<(Arc<Handle>, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let ctx = handle.current();
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let caller = presented
        .and_then(|t| ctx.tokens.who(t))
        .map(|(name, role)| (name.to_string(), role));
    if role == Role::Read && !ctx.config.auth.read_requires_token {
        // Open reads: a valid token still says who asks, for what only callers with one see
        // (the start of a repair target's answer).
        drop(ctx);
        if let Some((name, _)) = caller {
            request.extensions_mut().insert(Caller(name));
        }
        return next.run(request).await;
    }
    let no_tokens = ctx.tokens.is_empty();
    drop(ctx);
    match caller {
        Some((name, has)) if has >= role => {
            request.extensions_mut().insert(Caller(name));
            next.run(request).await
        }
        Some((name, has)) => {
            tracing::warn!(path = %request.uri().path(), caller = %name, role = %has, needed = %role, "Refused a request beyond its token's role.");
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this needs the `{role}` role; the token of `{name}` has `{has}`"),
            )
            .into_response()
        }
        None => {
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

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1), the token is not.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn the_bearer_scheme_is_matched_whatever_its_case() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr  abc "] {
            assert_eq!(bearer(v), Some("abc"), "{v}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer(v), None, "{v}");
        }
    }
}
