//! Authentication: credentials (bearer token, basic auth) → one principal with a cluster scope.
//!
//! A cluster's token writes that cluster and reads it alone; a user (`users:`) reads the clusters
//! of its patterns. Secrets are compared as SHA-256 digests in constant time, every configured
//! entry checked; passwords may be stored as PostgreSQL SCRAM-SHA-256 verifiers, so the same
//! entry will authenticate the PostgreSQL wire protocol. Failures are counted by reason and logged
//! at most once per 10 s per reason.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use base64::Engine as _;
use fleetgate_query::scope::Scope;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;

/// Hex SHA-256 of a token.
pub(crate) fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Who made a request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The user's or cluster's name (`anonymous` in open mode).
    pub(crate) name: Arc<str>,
    /// What kind of credential it was.
    pub(crate) kind: PrincipalKind,
    /// The clusters it may read.
    pub(crate) scope: Arc<Scope>,
}

/// The credential behind a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrincipalKind {
    /// A cluster's write token, by the cluster's index in `clusters`.
    Cluster(usize),
    /// A configured user, by index in `users`.
    User(usize),
    /// Open dev mode: no credentials configured.
    Anonymous,
}

/// Why a request was not authenticated (the `reason` label of `fleetgate_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No credentials in the request.
    #[error(
        "authentication required: send `Authorization: Bearer <token>` or basic auth (user and password)"
    )]
    Missing,
    /// A token that matches no cluster and no user.
    #[error("unknown token")]
    UnknownToken,
    /// A basic-auth user and password that match no user (and a password that is no cluster token).
    #[error("wrong user name or password")]
    BadPassword,
    /// An Authorization header that is neither Bearer nor Basic, or cannot be decoded.
    #[error(
        "malformed Authorization header (use `Bearer <token>` or `Basic <base64 user:password>`)"
    )]
    Malformed,
}

impl AuthError {
    fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::UnknownToken => "unknown_token",
            AuthError::BadPassword => "bad_password",
            AuthError::Malformed => "malformed",
        }
    }
}

/// A PostgreSQL SCRAM-SHA-256 password verifier:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 fields, RFC 5802/7677).
#[derive(Clone)]
pub(crate) struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Iterations `fleetgate passwd` uses (PostgreSQL's default `scram_iterations`).
pub(crate) const SCRAM_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with a 32-byte output (one block): SCRAM's `Hi(password, salt, i)`.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

impl ScramVerifier {
    /// The verifier of `password` with this salt and iteration count.
    pub(crate) fn generate(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: digest(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// Parses PostgreSQL's text form; the error says which part is wrong.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or("must start with `SCRAM-SHA-256$` (run `fleetgate passwd`)")?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or("expected `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`")?;
        let (iter, salt) = params
            .split_once(':')
            .ok_or("expected `<iterations>:<salt>` after `SCRAM-SHA-256$`")?;
        let iterations: u32 = iter
            .parse()
            .map_err(|_| format!("iteration count {iter:?} is not a number"))?;
        if !(1..=10_000_000).contains(&iterations) {
            return Err(format!(
                "iteration count {iterations} is out of range (1..10,000,000)"
            ));
        }
        let salt = b64
            .decode(salt)
            .map_err(|_| "salt is not base64".to_string())?;
        if salt.is_empty() {
            return Err("salt is empty".into());
        }
        let (stored, server) = keys
            .split_once(':')
            .ok_or("expected `<StoredKey>:<ServerKey>`")?;
        let key = |name: &str, v: &str| -> Result<[u8; 32], String> {
            b64.decode(v)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or_else(|| format!("{name} is not 32 bytes of base64"))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key("StoredKey", stored)?,
            server_key: key("ServerKey", server)?,
        })
    }

    /// Whether `password` is the one this verifier was made from (constant-time comparison).
    pub(crate) fn verify(&self, password: &str) -> bool {
        let salted = salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        bool::from(digest(&client_key).ct_eq(&self.stored_key))
    }
}

impl ScramVerifier {
    /// A verifier no password matches, with this salt: the exchange a login of an unknown user
    /// gets, so that a client cannot tell unknown users from wrong passwords.
    pub(crate) fn mock(salt: Vec<u8>) -> Self {
        let mut keys = [0u8; 64];
        // no randomness: the keys stay zero, which no HMAC output is
        let _ = getrandom::fill(&mut keys);
        let mut stored_key = [0u8; 32];
        let mut server_key = [0u8; 32];
        stored_key.copy_from_slice(&keys[..32]);
        server_key.copy_from_slice(&keys[32..]);
        Self {
            iterations: SCRAM_ITERATIONS,
            salt,
            stored_key,
            server_key,
        }
    }

    /// The salt and iteration count the server sends in its first SCRAM message.
    pub(crate) fn salt_and_iterations(&self) -> (&[u8], u32) {
        (&self.salt, self.iterations)
    }

    /// Checks a SCRAM-SHA-256 client proof over `auth_message` (RFC 5802 §3): the server
    /// signature to send back when the proof is right, `None` otherwise.
    pub(crate) fn check_proof(&self, auth_message: &[u8], proof: &[u8]) -> Option<[u8; 32]> {
        let signature = hmac(&self.stored_key, &[auth_message]);
        if proof.len() != 32 {
            return None;
        }
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof[i] ^ signature[i];
        }
        bool::from(digest(&client_key).ct_eq(&self.stored_key))
            .then(|| hmac(&self.server_key, &[auth_message]))
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD;
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            b64.encode(&self.salt),
            b64.encode(self.stored_key),
            b64.encode(self.server_key)
        )
    }
}

/// A fresh verifier for `password` with a random 16-byte salt (`fleetgate passwd`).
pub(crate) fn new_verifier(password: &str) -> anyhow::Result<ScramVerifier> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness for the salt: {e}"))?;
    Ok(ScramVerifier::generate(password, &salt, SCRAM_ITERATIONS))
}

#[derive(Debug)]
enum Password {
    Clear([u8; 32]),
    Scram(ScramVerifier),
}

#[derive(Debug)]
struct User {
    name: Arc<str>,
    password: Option<Password>,
    token: Option<[u8; 32]>,
    scope: Arc<Scope>,
    /// SCRAM verifier of a clear-text password, made on the first PostgreSQL login.
    pg_verifier: std::sync::OnceLock<ScramVerifier>,
    clear_password: Option<String>,
}

#[derive(Debug)]
struct Cluster {
    name: Arc<str>,
    token: Option<[u8; 32]>,
    scope: Arc<Scope>,
    /// SCRAM verifier of a clear-text token, made on the first PostgreSQL login.
    pg_verifier: std::sync::OnceLock<ScramVerifier>,
    clear_token: Option<String>,
}

/// How a PostgreSQL wire login authenticates, decided from the startup message's user name.
#[derive(Debug)]
pub(crate) enum PgLogin {
    /// No credentials are configured (open dev mode): no password, the whole fleet.
    Trust(Principal),
    /// SCRAM-SHA-256 with this verifier; the principal once the proof checks.
    Scram(ScramVerifier, Principal),
    /// A cleartext password, checked against a token known only by its digest (a cluster's
    /// `token_sha256`, a user's token): offered over TLS only.
    Cleartext(Principal),
    /// No such user: a mock SCRAM exchange that always fails.
    Unknown(ScramVerifier),
}

/// Successful SCRAM checks kept so that a dashboard's requests cost one digest, not 4,096 HMACs.
const VERIFIED_CACHE_ENTRIES: usize = 1024;
/// At most one log line per reason in this many seconds.
const FAILURE_LOG_SECS: u64 = 10;

#[derive(Debug, Default)]
struct FailureLog {
    count: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

/// Credentials → principal.
#[derive(Debug)]
pub(crate) struct Authenticator {
    clusters: Vec<Cluster>,
    users: Vec<User>,
    /// Key of the per-name SCRAM salts of clear-text secrets and unknown users (random per run).
    pg_salt_key: [u8; 32],
    open_writes: bool,
    open_reads: bool,
    /// digest of (user index, password) → verified, for SCRAM users.
    verified: Mutex<HashMap<[u8; 32], ()>>,
    failures: Mutex<BTreeMap<&'static str, FailureLog>>,
}

/// Index of the entry whose digest equals `d`, comparing with every entry in constant time.
fn find_digest<'a>(
    entries: impl Iterator<Item = Option<&'a [u8; 32]>>,
    d: &[u8; 32],
) -> Option<usize> {
    let mut found = None;
    for (i, e) in entries.enumerate() {
        let hit = e.map_or(subtle::Choice::from(0), |x| x.ct_eq(d));
        if bool::from(hit) {
            found = Some(i);
        }
    }
    found
}

impl Authenticator {
    /// Builds from the validated config.
    pub(crate) fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let mut clusters = Vec::with_capacity(cfg.clusters.len());
        for c in &cfg.clusters {
            let token = match (&c.token, &c.token_sha256) {
                (Some(t), _) => Some(digest(t.as_bytes())),
                (None, Some(h)) => Some(parse_digest(h)?),
                (None, None) => None,
            };
            clusters.push(Cluster {
                name: c.name.as_str().into(),
                token,
                scope: Arc::new(Scope::cluster(&c.name)),
                pg_verifier: std::sync::OnceLock::new(),
                clear_token: c.token.clone(),
            });
        }
        let mut users = Vec::with_capacity(cfg.users.len());
        for (i, u) in cfg.users.iter().enumerate() {
            let password = match (&u.password, &u.password_scram) {
                (Some(p), _) => Some(Password::Clear(digest(p.as_bytes()))),
                (None, Some(v)) => Some(Password::Scram(ScramVerifier::parse(v).map_err(|e| {
                    anyhow::anyhow!("config key `users[{i}].password_scram`: {e}")
                })?)),
                (None, None) => None,
            };
            let token = match (&u.token, &u.token_sha256) {
                (Some(t), _) => Some(digest(t.as_bytes())),
                (None, Some(h)) => Some(parse_digest(h)?),
                (None, None) => None,
            };
            let scope = Scope::from_patterns(&u.clusters)
                .map_err(|e| anyhow::anyhow!("config key `users[{i}].clusters`: {e}"))?;
            users.push(User {
                name: u.name.as_str().into(),
                password,
                token,
                scope: Arc::new(scope),
                pg_verifier: std::sync::OnceLock::new(),
                clear_password: u.password.clone(),
            });
        }
        let mut pg_salt_key = [0u8; 32];
        getrandom::fill(&mut pg_salt_key)
            .map_err(|e| anyhow::anyhow!("no randomness for SCRAM salts: {e}"))?;
        Ok(Self {
            clusters,
            users,
            pg_salt_key,
            open_writes: cfg.open_mode(),
            open_reads: cfg.open_reads(),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    /// True when reads need no credentials (open dev mode without users).
    pub(crate) fn open_reads(&self) -> bool {
        self.open_reads
    }

    /// The principal of a read request: anonymous with the whole fleet in open mode, else from
    /// the credentials.
    pub(crate) fn authenticate_read(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if self.open_reads {
            return Ok(Principal {
                name: "anonymous".into(),
                kind: PrincipalKind::Anonymous,
                scope: Arc::new(Scope::fleet()),
            });
        }
        self.authenticate(headers)
    }

    /// The principal of a write request: anonymous in open mode (the cluster then comes from the
    /// request), else from the credentials (only a cluster token may write).
    pub(crate) fn authenticate_write(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if self.open_writes {
            return Ok(Principal {
                name: "anonymous".into(),
                kind: PrincipalKind::Anonymous,
                scope: Arc::new(Scope::fleet()),
            });
        }
        self.authenticate(headers)
    }

    /// Credentials → principal; every failure is counted and (rate-limited) logged.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let r = self.resolve(headers);
        if let Err(e) = r {
            self.failed(e);
        }
        r
    }

    fn resolve(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(AuthError::Missing);
        };
        let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
        if let Some(t) = strip_scheme(value, "bearer") {
            let t = t.trim();
            if t.is_empty() {
                return Err(AuthError::Missing);
            }
            return self.by_token(t).ok_or(AuthError::UnknownToken);
        }
        let Some(b) = strip_scheme(value, "basic") else {
            return Err(AuthError::Malformed);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| AuthError::Malformed)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (user, password) = text.split_once(':').unwrap_or(("", text.as_str()));
        if password.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(p) = self.by_password(user, password) {
            return Ok(p);
        }
        // Prometheus's `basic_auth` with the cluster token as the password (any user name)
        self.by_token(password).ok_or(AuthError::BadPassword)
    }

    fn by_token(&self, token: &str) -> Option<Principal> {
        let d = digest(token.as_bytes());
        let user = find_digest(self.users.iter().map(|u| u.token.as_ref()), &d);
        let cluster = find_digest(self.clusters.iter().map(|c| c.token.as_ref()), &d);
        if let Some(i) = cluster {
            let c = self.clusters.get(i)?;
            return Some(Principal {
                name: Arc::clone(&c.name),
                kind: PrincipalKind::Cluster(i),
                scope: Arc::clone(&c.scope),
            });
        }
        let i = user?;
        let u = self.users.get(i)?;
        Some(self.user_principal(i, u))
    }

    fn by_password(&self, name: &str, password: &str) -> Option<Principal> {
        let (i, u) = self
            .users
            .iter()
            .enumerate()
            .find(|(_, u)| &*u.name == name)?;
        let ok = match u.password.as_ref()? {
            Password::Clear(d) => bool::from(digest(password.as_bytes()).ct_eq(d)),
            Password::Scram(v) => {
                let key = digest(format!("{i}\u{0}{password}").as_bytes());
                if self.verified.lock().contains_key(&key) {
                    true
                } else if v.verify(password) {
                    let mut m = self.verified.lock();
                    if m.len() >= VERIFIED_CACHE_ENTRIES {
                        m.clear();
                    }
                    m.insert(key, ());
                    true
                } else {
                    false
                }
            }
        };
        ok.then(|| self.user_principal(i, u))
    }

    fn user_principal(&self, i: usize, u: &User) -> Principal {
        Principal {
            name: Arc::clone(&u.name),
            kind: PrincipalKind::User(i),
            scope: Arc::clone(&u.scope),
        }
    }

    fn failed(&self, e: AuthError) {
        let reason = e.reason();
        let mut m = self.failures.lock();
        let f = m.entry(reason).or_default();
        f.count += 1;
        f.since_log += 1;
        let now = Instant::now();
        if f.last_log
            .is_none_or(|t| now.duration_since(t).as_secs() >= FAILURE_LOG_SECS)
        {
            tracing::warn!(
                reason,
                failures = f.since_log,
                "authentication failed (logged at most once per 10 s per reason)"
            );
            f.since_log = 0;
            f.last_log = Some(now);
        }
    }

    /// How a PostgreSQL login as `user` authenticates.
    pub(crate) fn pg_login(&self, user: &str) -> PgLogin {
        if self.open_reads {
            return PgLogin::Trust(Principal {
                name: "anonymous".into(),
                kind: PrincipalKind::Anonymous,
                scope: Arc::new(Scope::fleet()),
            });
        }
        let salt =
            |secret_of: &str| hmac(&self.pg_salt_key, &[secret_of.as_bytes()])[..16].to_vec();
        if let Some((i, u)) = self
            .users
            .iter()
            .enumerate()
            .find(|(_, u)| &*u.name == user)
        {
            let principal = self.user_principal(i, u);
            return match (&u.password, &u.clear_password) {
                (Some(Password::Scram(v)), _) => PgLogin::Scram(v.clone(), principal),
                (Some(Password::Clear(_)), Some(clear)) => {
                    let v = u.pg_verifier.get_or_init(|| {
                        ScramVerifier::generate(
                            clear,
                            &salt(&format!("u\0{user}")),
                            SCRAM_ITERATIONS,
                        )
                    });
                    PgLogin::Scram(v.clone(), principal)
                }
                _ if u.token.is_some() => PgLogin::Cleartext(principal),
                _ => PgLogin::Unknown(ScramVerifier::mock(salt(&format!("x\0{user}")))),
            };
        }
        if let Some((i, c)) = self
            .clusters
            .iter()
            .enumerate()
            .find(|(_, c)| &*c.name == user)
        {
            let principal = Principal {
                name: Arc::clone(&c.name),
                kind: PrincipalKind::Cluster(i),
                scope: Arc::clone(&c.scope),
            };
            return match (&c.clear_token, &c.token) {
                (Some(t), _) => {
                    let v = c.pg_verifier.get_or_init(|| {
                        ScramVerifier::generate(t, &salt(&format!("c\0{user}")), SCRAM_ITERATIONS)
                    });
                    PgLogin::Scram(v.clone(), principal)
                }
                (None, Some(_)) => PgLogin::Cleartext(principal),
                (None, None) => PgLogin::Unknown(ScramVerifier::mock(salt(&format!("x\0{user}")))),
            };
        }
        PgLogin::Unknown(ScramVerifier::mock(salt(&format!("x\0{user}"))))
    }

    /// Whether `password` is the token of `principal` (a [`PgLogin::Cleartext`] login).
    pub(crate) fn pg_cleartext(&self, principal: &Principal, password: &str) -> bool {
        let d = digest(password.as_bytes());
        let token = match principal.kind {
            PrincipalKind::Cluster(i) => self.clusters.get(i).and_then(|c| c.token.as_ref()),
            PrincipalKind::User(i) => self.users.get(i).and_then(|u| u.token.as_ref()),
            PrincipalKind::Anonymous => None,
        };
        let ok = token.is_some_and(|t| bool::from(t.ct_eq(&d)));
        if !ok {
            self.failed(AuthError::BadPassword);
        }
        ok
    }

    /// Counts a failed PostgreSQL login (wrong password, unknown user).
    pub(crate) fn pg_failed(&self) {
        self.failed(AuthError::BadPassword);
    }

    /// `(reason, count)` of every failure reason seen so far.
    pub(crate) fn failure_counts(&self) -> Vec<(&'static str, u64)> {
        self.failures
            .lock()
            .iter()
            .map(|(r, f)| (*r, f.count))
            .collect()
    }
}

fn parse_digest(h: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(h)?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a token digest is not 32 bytes"))
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::{ClusterConfig, UserConfig};

    fn cfg() -> Config {
        Config {
            clusters: vec![ClusterConfig {
                name: "alpha".into(),
                token: Some("s3cret".into()),
                ..Default::default()
            }],
            users: vec![
                UserConfig {
                    name: "grafana".into(),
                    password_scram: Some(ScramVerifier::generate("pw", b"salty", 16).to_string()),
                    clusters: vec!["*".into()],
                    ..Default::default()
                },
                UserConfig {
                    name: "team".into(),
                    password: Some("clear".into()),
                    token: Some("team-token".into()),
                    clusters: vec!["al*".into()],
                    ..Default::default()
                },
            ],
            ..Config::default()
        }
    }

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {b}")).unwrap(),
        );
        h
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_passwords_and_failures() {
        let a = Authenticator::from_config(&cfg()).unwrap();
        assert!(!a.open_reads() && !a.open_writes);
        assert_eq!(
            a.authenticate(&HeaderMap::new()).unwrap_err(),
            AuthError::Missing
        );
        let p = a.authenticate(&bearer("s3cret")).unwrap();
        assert_eq!(p.kind, PrincipalKind::Cluster(0));
        assert!(p.scope.allows("alpha") && !p.scope.allows("beta"));
        // Prometheus basic_auth: any user, the token as password
        let p = a.authenticate(&basic("x", "s3cret")).unwrap();
        assert_eq!(p.kind, PrincipalKind::Cluster(0));
        let p = a.authenticate(&basic("grafana", "pw")).unwrap();
        assert_eq!(p.kind, PrincipalKind::User(0));
        assert!(p.scope.is_fleet());
        // cached verification answers the same
        assert_eq!(
            a.authenticate(&basic("grafana", "pw")).unwrap().kind,
            PrincipalKind::User(0)
        );
        assert_eq!(
            a.authenticate(&basic("grafana", "nope")).unwrap_err(),
            AuthError::BadPassword
        );
        let p = a.authenticate(&bearer("team-token")).unwrap();
        assert_eq!(p.kind, PrincipalKind::User(1));
        assert!(p.scope.allows("alpha") && !p.scope.allows("beta"));
        assert_eq!(
            a.authenticate(&basic("team", "clear")).unwrap().kind,
            PrincipalKind::User(1)
        );
        assert_eq!(
            a.authenticate(&bearer("nope")).unwrap_err(),
            AuthError::UnknownToken
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Digest abc"));
        assert_eq!(a.authenticate(&h).unwrap_err(), AuthError::Malformed);
        h.insert("authorization", HeaderValue::from_static("Basic %%%"));
        assert_eq!(a.authenticate(&h).unwrap_err(), AuthError::Malformed);
        let counts: BTreeMap<_, _> = a.failure_counts().into_iter().collect();
        assert_eq!(counts.get("missing"), Some(&1));
        assert_eq!(counts.get("bad_password"), Some(&1));
        assert_eq!(counts.get("unknown_token"), Some(&1));
        assert_eq!(counts.get("malformed"), Some(&2));
    }

    #[test]
    fn open_mode_is_anonymous_fleet() {
        let a = Authenticator::from_config(&Config::default()).unwrap();
        assert!(a.open_reads() && a.open_writes);
        let p = a.authenticate_read(&HeaderMap::new()).unwrap();
        assert_eq!(p.kind, PrincipalKind::Anonymous);
        assert!(p.scope.is_fleet());
    }

    #[test]
    fn scram_verifier_matches_postgresql() {
        // RFC 7677's example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        // These keys give the RFC's server signature (v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=)
        // for its exchange, checked independently with Python's hashlib/hmac.
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::generate("pencil", &salt, 4096);
        let salted = salted_password(b"pencil", &salt, 4096);
        assert_eq!(
            b64.encode(salted),
            "xKSVEDI6tPlSysH6mUQZOeeOp01r6B3fcJbodRPcYV0="
        );
        let text = v.to_string();
        assert_eq!(
            text,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        let back = ScramVerifier::parse(&text).unwrap();
        assert!(back.verify("pencil"));
        assert!(!back.verify("pencil2"));
        for bad in [
            "md5abc",
            "SCRAM-SHA-256$x:YQ==$a:b",
            "SCRAM-SHA-256$4096:YQ==$YQ==:YQ==",
            "SCRAM-SHA-256$4096:$",
        ] {
            assert!(ScramVerifier::parse(bad).is_err(), "{bad}");
        }
        let fresh = new_verifier("x").unwrap();
        assert!(fresh.verify("x"));
    }
}
