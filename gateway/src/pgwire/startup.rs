//! PostgreSQL startup: TLS required when configured, then the login of the startup message's user
//! through [`Authenticator::pg_login`](crate::auth::Authenticator::pg_login): SCRAM-SHA-256
//! (RFC 5802/7677, without channel binding) against the user's verifier or a cluster's token; a
//! cleartext password over TLS for tokens known only by their digest; an unknown user gets a mock
//! exchange that fails like a wrong password. On success the connection's SQL session is made
//! with the principal's scope.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use fleetgate_query::read::ReadView;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::io::AsyncWriteExt;

use super::Conn;
use super::error::user_error;
use crate::auth::{PgLogin, Principal, ScramVerifier};

const SCRAM: &str = "SCRAM-SHA-256";

/// Where a login stands.
#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    /// SASL offered; waiting for the client-first message.
    ScramStart {
        verifier: ScramVerifier,
        principal: Option<Principal>,
        user: String,
    },
    /// Server-first sent; waiting for the client-final message.
    ScramFinal {
        verifier: ScramVerifier,
        principal: Option<Principal>,
        user: String,
        /// `client-first-message-bare,server-first-message,` of the AuthMessage.
        auth_prefix: String,
        nonce: String,
        gs2_header: String,
    },
    /// A cleartext password was asked for.
    Cleartext {
        principal: Principal,
        user: String,
    },
    Done,
}

/// The startup handler of one connection.
#[derive(Debug)]
pub(super) struct Startup {
    conn: Arc<Conn>,
    state: parking_lot::Mutex<State>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn protocol_violation(msg: &str) -> PgWireError {
    user_error("FATAL", "08P01", format!("SCRAM: {msg}"))
}

impl Startup {
    pub(super) fn new(conn: Arc<Conn>) -> Self {
        Self {
            conn,
            state: parking_lot::Mutex::new(State::Start),
        }
    }

    /// The principal's session, the cancel key, and AuthenticationOk … ReadyForQuery.
    async fn finish<C>(&self, client: &mut C, principal: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let st = &self.conn.st;
        let Some(core) = st.core.get() else {
            return Err(user_error(
                "FATAL",
                "57P03",
                "the database system is starting up (replaying the WAL)".into(),
            ));
        };
        let view = Arc::new(ReadView::new(
            Arc::clone(&core.store),
            (*principal.scope).clone(),
        ));
        let budgets = Arc::new(crate::http::cost::ReaderBudgets::new(st, &view));
        let session = st
            .sql
            .session(view, budgets)
            .map_err(|e| super::error::from_query(&e))?;
        let _ = self.conn.session.set(session);
        tracing::debug!(principal = %principal.name, "PostgreSQL login");
        let _ = self.conn.principal.set(principal);
        let (pid, key) = self.conn.registry.keys.generate(&*client);
        self.conn.registry.register(pid, &key, &self.conn.cancel);
        client.set_pid_and_secret_key(pid, key);
        *self.state.lock() = State::Done;
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = fleetgate_query::sql::functions::SERVER_VERSION.to_string();
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        pgwire::api::auth::finish_authentication(client, &params).await
    }

    fn failed(&self, user: &str) -> PgWireError {
        self.conn.st.auth.pg_failed();
        *self.state.lock() = State::Done;
        bad_password(user)
    }
}

/// PostgreSQL's answer to a wrong password or an unknown user (the same for both).
fn bad_password(user: &str) -> PgWireError {
    user_error(
        "FATAL",
        "28P01",
        format!("password authentication failed for user {user:?}"),
    )
}

/// Splits a SCRAM client-first message into its GS2 header (`n,,`) and the bare part, refusing
/// channel binding (not offered) and an authorization identity.
fn client_first(data: &[u8]) -> PgWireResult<(String, String, String)> {
    let text = std::str::from_utf8(data).map_err(|_| protocol_violation("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or("");
    let authzid = parts
        .next()
        .ok_or_else(|| protocol_violation("no GS2 header"))?;
    let bare = parts
        .next()
        .ok_or_else(|| protocol_violation("no client-first message"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(protocol_violation(
                "channel binding is not supported (use channel_binding=disable or prefer)",
            ));
        }
        _ => return Err(protocol_violation("bad GS2 channel-binding flag")),
    }
    if !authzid.is_empty() {
        return Err(protocol_violation(
            "an authorization identity is not supported",
        ));
    }
    let nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 256
                && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        })
        .ok_or_else(|| protocol_violation("no client nonce"))?;
    Ok((
        format!("{flag},{authzid},"),
        bare.to_string(),
        nonce.to_string(),
    ))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if !matches!(*self.state.lock(), State::Start) {
                    return Err(protocol_violation("a second startup message"));
                }
                if self.conn.tls_required && !client.is_secure() {
                    return Err(user_error(
                        "FATAL",
                        "28000",
                        "this server accepts TLS connections only (sslmode=require)".into(),
                    ));
                }
                pgwire::api::auth::protocol_negotiation(client, startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .ok_or(PgWireError::UserNameRequired)?;
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                match self.conn.st.auth.pg_login(&user) {
                    PgLogin::Trust(p) => return self.finish(client, p).await,
                    PgLogin::Scram(verifier, p) => {
                        *self.state.lock() = State::ScramStart {
                            verifier,
                            principal: Some(p),
                            user,
                        };
                    }
                    PgLogin::Unknown(verifier) => {
                        *self.state.lock() = State::ScramStart {
                            verifier,
                            principal: None,
                            user,
                        };
                    }
                    PgLogin::Cleartext(p) => {
                        if !client.is_secure() {
                            return Err(user_error(
                                "FATAL",
                                "28000",
                                format!(
                                    "user {user:?} logs in with a token configured by its digest \
                                     only (token_sha256): SCRAM needs the token itself; connect \
                                     with TLS (the password is then sent as is) or configure \
                                     `token`"
                                ),
                            ));
                        }
                        *self.state.lock() = State::Cleartext { principal: p, user };
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::CleartextPassword,
                            ))
                            .await?;
                        return Ok(());
                    }
                }
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![SCRAM.to_string()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let state = std::mem::take(&mut *self.state.lock());
                match state {
                    State::ScramStart {
                        verifier,
                        principal,
                        user,
                    } => {
                        let first = msg.into_sasl_initial_response()?;
                        if first.auth_method != SCRAM {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(first.auth_method));
                        }
                        let data = first
                            .data
                            .ok_or_else(|| protocol_violation("empty client-first message"))?;
                        let (gs2_header, bare, client_nonce) = client_first(&data)?;
                        let mut server_nonce = [0u8; 18];
                        getrandom::fill(&mut server_nonce)
                            .map_err(|_| user_error("FATAL", "58000", "no randomness".into()))?;
                        let nonce = format!("{client_nonce}{}", b64().encode(server_nonce));
                        let (salt, iterations) = verifier.salt_and_iterations();
                        let server_first =
                            format!("r={nonce},s={},i={iterations}", b64().encode(salt));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(Bytes::from(server_first.clone())),
                            ))
                            .await?;
                        *self.state.lock() = State::ScramFinal {
                            verifier,
                            principal,
                            user,
                            auth_prefix: format!("{bare},{server_first},"),
                            nonce,
                            gs2_header,
                        };
                    }
                    State::ScramFinal {
                        verifier,
                        principal,
                        user,
                        auth_prefix,
                        nonce,
                        gs2_header,
                    } => {
                        let last = msg.into_sasl_response()?;
                        let text = std::str::from_utf8(&last.data)
                            .map_err(|_| protocol_violation("not UTF-8"))?;
                        let (without_proof, proof) = text
                            .rsplit_once(",p=")
                            .ok_or_else(|| protocol_violation("no client proof"))?;
                        let mut binding = None;
                        let mut got_nonce = None;
                        for attr in without_proof.split(',') {
                            if let Some(c) = attr.strip_prefix("c=") {
                                binding = Some(c);
                            } else if let Some(r) = attr.strip_prefix("r=") {
                                got_nonce = Some(r);
                            }
                        }
                        if binding != Some(b64().encode(gs2_header.as_bytes()).as_str()) {
                            return Err(protocol_violation("channel binding does not match"));
                        }
                        if got_nonce != Some(nonce.as_str()) {
                            return Err(protocol_violation("nonce does not match"));
                        }
                        let proof = b64()
                            .decode(proof)
                            .map_err(|_| protocol_violation("client proof is not base64"))?;
                        let auth_message = format!("{auth_prefix}{without_proof}");
                        match (
                            verifier.check_proof(auth_message.as_bytes(), &proof),
                            principal,
                        ) {
                            (Some(signature), Some(p)) => {
                                let last = format!("v={}", b64().encode(signature));
                                client
                                    .feed(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(Bytes::from(last)),
                                    ))
                                    .await?;
                                return self.finish(client, p).await;
                            }
                            _ => return Err(self.failed(&user)),
                        }
                    }
                    State::Cleartext { principal, user } => {
                        let pw = msg.into_password()?;
                        if self.conn.st.auth.pg_cleartext(&principal, &pw.password) {
                            return self.finish(client, principal).await;
                        }
                        *self.state.lock() = State::Done;
                        return Err(bad_password(&user));
                    }
                    State::Start | State::Done => {
                        return Err(protocol_violation("unexpected password message"));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Answers a connection over `sql.max_connections` with FATAL 53300 and closes it (before any
/// message is read: libpq reads an ErrorResponse in place of the SSL answer, too).
pub(super) async fn refuse(mut socket: tokio::net::TcpStream, message: String) {
    let mut fields = Vec::new();
    for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "53300")] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(b'M');
    fields.extend_from_slice(message.as_bytes());
    fields.push(0);
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&fields);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = socket.write_all(&msg).await;
        let _ = socket.shutdown().await;
    })
    .await;
}
