//! The PostgreSQL wire listener (`sql.pg_addr`): psql, JDBC/ODBC tools, BI tools and Grafana's
//! PostgreSQL datasource read SQL over it.
//!
//! Each connection gets its own handlers ([`startup`]: SCRAM-SHA-256 against `users:` and
//! cluster tokens; [`query`]: the simple and extended protocols over a [`SqlSession`] of the
//! login's scope), runs on the query pool's runtime (never on the workers that acknowledge
//! writes), and counts against `sql.max_connections`. With TLS configured a connection that does
//! not ask for TLS is refused; a cancel request stops the query of the connection it names.
//!
//! [`SqlSession`]: fleetgate_query::sql::SqlSession

mod error;
mod query;
mod startup;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use fleetgate_query::sql::SqlSession;
use parking_lot::Mutex;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{NoopHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::auth::Principal;
use crate::http::AppState;

/// A connection's cancel signal: a cancel request bumps the generation and wakes the query.
#[derive(Debug, Default)]
pub(crate) struct CancelToken {
    generation: std::sync::atomic::AtomicU64,
    notify: Notify,
}

impl CancelToken {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn cancel(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Resolves once a cancel request arrives after generation `seen`.
    async fn canceled_after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            if self.generation() != seen {
                return;
            }
            notified.await;
        }
    }
}

/// Live connections by (pid, secret key), for cancel requests.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<(i32, Bytes), Weak<CancelToken>>>,
    keys: RandomPidSecretKeyGenerator,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.conns.lock().len())
            .finish_non_exhaustive()
    }
}

fn key_bytes(k: &SecretKey) -> Bytes {
    match k {
        SecretKey::I32(v) => Bytes::copy_from_slice(&v.to_be_bytes()),
        SecretKey::Bytes(b) => b.clone(),
    }
}

impl Registry {
    fn register(&self, pid: i32, key: &SecretKey, token: &Arc<CancelToken>) {
        let mut m = self.conns.lock();
        m.retain(|_, t| t.strong_count() > 0);
        m.insert((pid, key_bytes(key)), Arc::downgrade(token));
    }

    fn cancel(&self, pid: i32, key: &SecretKey) -> bool {
        let token = self
            .conns
            .lock()
            .get(&(pid, key_bytes(key)))
            .and_then(Weak::upgrade);
        match token {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// What a connection's handlers share.
#[derive(Debug)]
pub(crate) struct Conn {
    st: Arc<AppState>,
    registry: Arc<Registry>,
    /// Set once the login succeeded.
    principal: OnceLock<Principal>,
    session: OnceLock<SqlSession>,
    cancel: Arc<CancelToken>,
    /// TLS is configured: a plaintext connection is refused at startup.
    tls_required: bool,
}

impl Conn {
    fn session(&self) -> Result<&SqlSession, pgwire::error::PgWireError> {
        self.session.get().ok_or_else(|| {
            error::user_error(
                "FATAL",
                "08P01",
                "the connection has not been authenticated".into(),
            )
        })
    }
}

/// The handlers of one connection.
struct Handlers {
    startup: Arc<startup::Startup>,
    query: Arc<query::Queries>,
    cancel: Arc<Canceler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.query)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.query)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::new(NoopHandler)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// Answers cancel requests (they arrive on a connection of their own).
struct Canceler {
    registry: Arc<Registry>,
}

#[async_trait]
impl CancelHandler for Canceler {
    async fn on_cancel_request(&self, req: CancelRequest) {
        if self.registry.cancel(req.pid, &req.secret_key) {
            tracing::debug!(pid = req.pid, "PostgreSQL cancel request");
        }
    }
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    st: Arc<AppState>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tls.map(|cfg| {
        let mut c = rustls::ServerConfig::clone(&cfg);
        // direct TLS (PostgreSQL 17 `sslnegotiation=direct`) requires this ALPN
        c.alpn_protocols = vec![b"postgresql".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let registry = Arc::new(Registry::default());
    let slots = Arc::new(Semaphore::new(st.config.sql.max_connections));
    let runtime = st.pool.handle();
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            runtime.spawn(startup::refuse(
                socket,
                format!(
                    "sorry, too many clients already (sql.max_connections = {})",
                    st.config.sql.max_connections
                ),
            ));
            continue;
        };
        let conn = Arc::new(Conn {
            st: Arc::clone(&st),
            registry: Arc::clone(&registry),
            principal: OnceLock::new(),
            session: OnceLock::new(),
            cancel: Arc::new(CancelToken::default()),
            tls_required: acceptor.is_some(),
        });
        let handlers = Handlers {
            startup: Arc::new(startup::Startup::new(Arc::clone(&conn))),
            query: Arc::new(query::Queries::new(Arc::clone(&conn))),
            cancel: Arc::new(Canceler {
                registry: Arc::clone(&registry),
            }),
        };
        let acceptor = acceptor.clone();
        runtime.spawn(async move {
            let _permit = permit;
            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                tracing::debug!(error = %e, %peer, "PostgreSQL connection ended with an error");
            }
            drop(conn);
        });
    }
}
