//! The bearer token every admin route asks for, and the throttle on wrong ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::throttle::Verdict;
use super::{AdminError, AdminState};

pub(super) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let client = client_ip(&request);
    // Checked before the token, so a refused client learns nothing from its guess.
    if let Some(retry_after) = state.throttle.refused(client) {
        return AdminError::TooManyFailures { retry_after }.into_response();
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        // No token at all is a client that does not know the API, not a guess.
        return AdminError::Unauthorized.into_response();
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if bool::from(digest.ct_eq(&state.token_digest)) {
        return next.run(request).await;
    }
    match state.throttle.failed(client) {
        Verdict::Unauthorized => AdminError::Unauthorized.into_response(),
        Verdict::Refused { retry_after } => {
            AdminError::TooManyFailures { retry_after }.into_response()
        }
    }
}

/// The peer address the admin listener accepted; the admin port has no proxy
/// in front, so it is the client's.
fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}
