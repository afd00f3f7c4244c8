//! Cluster identity from authentication: a bearer token (or basic-auth password) maps to one cluster.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of a token.
pub(crate) fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What authentication decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A configured cluster, by its index in `clusters`.
    Cluster(usize),
    /// Open dev mode: the cluster comes from the request.
    Open,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No credentials in the request.
    #[error("missing credentials: send `Authorization: Bearer <cluster token>`")]
    Missing,
    /// Credentials that match no cluster.
    #[error("unknown token")]
    Unknown,
    /// An Authorization header that is neither Bearer nor Basic.
    #[error("unsupported Authorization scheme (use Bearer or Basic)")]
    Scheme,
}

/// Token digests → cluster index. Lookups hash the presented token, so the comparison never
/// touches the secret byte by byte.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authenticator {
    by_digest: Arc<HashMap<[u8; 32], usize>>,
}

impl Authenticator {
    /// Builds from `(hex sha256, cluster index)` pairs; an empty list means open mode.
    pub(crate) fn new(digests: impl IntoIterator<Item = (String, usize)>) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        for (hex_digest, idx) in digests {
            let bytes = hex::decode(&hex_digest)?;
            let arr: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("token digest of cluster #{idx} is not 32 bytes"))?;
            map.insert(arr, idx);
        }
        Ok(Self {
            by_digest: Arc::new(map),
        })
    }

    /// True when no token is configured.
    pub(crate) fn is_open(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Authenticates a request by its headers.
    pub(crate) fn identify(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        if self.is_open() {
            return Ok(Identity::Open);
        }
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(AuthError::Missing);
        };
        let value = value.to_str().map_err(|_| AuthError::Unknown)?.trim();
        let token = if let Some(t) = strip_scheme(value, "bearer") {
            t.trim().to_string()
        } else if let Some(b) = strip_scheme(value, "basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| AuthError::Unknown)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::Unknown)?;
            // user:password — the password is the cluster token
            match text.split_once(':') {
                Some((_, pw)) => pw.to_string(),
                None => text,
            }
        } else {
            return Err(AuthError::Scheme);
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_digest
            .get(&digest)
            .copied()
            .map(Identity::Cluster)
            .ok_or(AuthError::Unknown)
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_basic_missing_unknown() {
        let a = Authenticator::new([(sha256_hex("s3cret"), 2)]).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(a.identify(&h), Err(AuthError::Missing));
        h.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(a.identify(&h), Ok(Identity::Cluster(2)));
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(a.identify(&h), Err(AuthError::Unknown));
        // prometheus basic_auth: {username: x, password: s3cret}
        let b = base64::engine::general_purpose::STANDARD.encode("x:s3cret");
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {b}")).unwrap(),
        );
        assert_eq!(a.identify(&h), Ok(Identity::Cluster(2)));
        h.insert("authorization", HeaderValue::from_static("Digest abc"));
        assert_eq!(a.identify(&h), Err(AuthError::Scheme));
        assert!(Authenticator::new(Vec::new()).unwrap().is_open());
    }
}
