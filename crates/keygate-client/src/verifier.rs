//! Offline verification of a Hub's tokens, for services and the gateway: signatures
//! and claims are checked locally against the Hub's JWKS, revocations come from the
//! Hub's feed, and the JWKS is read again when a token names a key not seen yet (a
//! rotation), at most once per [`KEY_REFETCH_INTERVAL`], and every
//! [`KEY_REFRESH_PERIOD`].
//!
//! The Hub is either remote (its URL: `/.well-known/jwks.json`, `/v1/revocations`,
//! `/v1/revocations/ws`) or in this process ([`OfflineVerifier::local`]: its key ring
//! and revocation broadcast, no sockets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{ClientError, read_json};
use futures_util::future::BoxFuture;
use keygate_core::dpop::{self, DpopError, ReplayCache};
use keygate_core::error::Error;
use keygate_core::time::UnixTime;
use keygate_core::token::{AccessClaims, Jwks, TokenError, TokenVerifier};
use keygate_proto::{RevocationEvent, RevocationFeed};

/// Tokens naming an unknown key make the verifier read the JWKS again at most this
/// often, so that made-up key ids cannot make it hammer the Hub.
pub const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// The JWKS is also read again this often, to drop keys the Hub no longer publishes.
pub const KEY_REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// Longest wait for a JWKS read on behalf of a request.
const KEY_FETCH_WAIT: Duration = Duration::from_secs(5);

/// A token authority in this process (the Hub of `keygate serve`), as an
/// [`OfflineVerifier`] sees it: its issuer, its published keys and its revocations.
/// The server implements it; this crate never depends on the server.
pub trait TokenAuthority: Send + Sync + 'static {
    /// The `iss` of its tokens.
    fn issuer(&self) -> &str;
    /// The keys it publishes now.
    fn jwks(&self) -> Jwks;
    /// Revocations made from now on, pushed as they happen.
    fn subscribe_revocations(&self) -> broadcast::Receiver<RevocationEvent>;
    /// The revocations after `since`, oldest first, one page at a time.
    fn revocation_feed(&self, since: i64) -> BoxFuture<'_, Result<RevocationFeed, Error>>;
}

enum KeySource {
    Remote {
        http: reqwest::Client,
        jwks_url: String,
    },
    Local(Arc<dyn TokenAuthority>),
}

/// An offline token verifier that follows the Hub's revocation feed and key
/// rotations: a session revoked at the Hub is refused here within about a second,
/// and a token signed by a key the Hub started using after this verifier started is
/// accepted, without asking the Hub per request.
pub struct OfflineVerifier {
    source: KeySource,
    issuer: String,
    audiences: Option<Vec<String>>,
    keys: RwLock<Arc<TokenVerifier>>,
    /// When a token with an unknown key id last caused a JWKS read.
    last_refetch: Mutex<Option<Instant>>,
    /// Held during a JWKS read for a request, so concurrent ones wait for it.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
    /// Revoked session ids, with when their tokens expire anyway (then forgotten).
    revoked: RwLock<HashMap<String, UnixTime>>,
    /// Accept development tokens (`acr` `dev`, docs/dev-mode.md); off by default.
    accept_dev: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
    /// DPoP proofs seen by [`OfflineVerifier::verify_request`] (bounded).
    dpop_seen: Mutex<ReplayCache>,
}

/// A request as a resource server sees it, for [`OfflineVerifier::verify_request`]:
/// its `Authorization` and `DPoP` headers, its method, and the URL the client
/// sent it to (the service's public URL, without query).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub authorization: Option<&'a str>,
    pub dpop: Option<&'a str>,
    pub method: &'a str,
    pub url: &'a str,
}

impl Drop for OfflineVerifier {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

impl OfflineVerifier {
    /// Fetches the JWKS and the revocation backlog from `hub_url` (http://host:port)
    /// and starts following the push feed in the background.
    pub async fn start(hub_url: &str, issuer: &str) -> Result<Arc<Self>, ClientError> {
        Self::start_for(hub_url, issuer, None).await
    }

    /// Like [`OfflineVerifier::start`], accepting only tokens whose `aud` is one of
    /// `audiences` (API key ids) when given.
    pub async fn start_for(
        hub_url: &str,
        issuer: &str,
        audiences: Option<Vec<String>>,
    ) -> Result<Arc<Self>, ClientError> {
        let base = hub_url.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let source = KeySource::Remote {
            http: http.clone(),
            jwks_url: format!("{base}/.well-known/jwks.json"),
        };
        let this = Arc::new(Self::new(source, issuer, audiences));
        this.fetch_keys().await?;
        let mut cursor = 0;
        loop {
            let res = http
                .get(format!("{base}/v1/revocations?since={cursor}"))
                .send()
                .await
                .map_err(|_| ClientError::Connect(base.to_owned()))?;
            let feed: serde_json::Value = read_json(res).await?;
            let events = feed["revocations"].as_array().cloned().unwrap_or_default();
            for e in &events {
                this.apply_json(e);
            }
            let next = feed["cursor"].as_i64().unwrap_or(cursor);
            if events.is_empty() || next <= cursor {
                break;
            }
            cursor = next;
        }
        let ws_base = base.replacen("http", "ws", 1);
        this.spawn(Self::follow(Arc::downgrade(&this), ws_base, cursor));
        this.spawn(Self::refresh_periodically(Arc::downgrade(&this)));
        Ok(this)
    }

    /// A verifier of the tokens of `hub`, running in this process: its keys are read
    /// from the Hub's key ring and revocations from its broadcast, with no sockets.
    pub async fn local(
        hub: Arc<dyn TokenAuthority>,
        audiences: Option<Vec<String>>,
    ) -> Result<Arc<Self>, Error> {
        // Subscribe before reading the backlog, so that nothing falls in between.
        let live = hub.subscribe_revocations();
        let this = Arc::new(Self::new(
            KeySource::Local(hub.clone()),
            hub.issuer(),
            audiences,
        ));
        this.fetch_keys().await.map_err(|_| Error::Internal)?;
        let cursor = this.read_local_backlog(&*hub, 0).await?;
        this.spawn(Self::follow_local(Arc::downgrade(&this), hub, live, cursor));
        this.spawn(Self::refresh_periodically(Arc::downgrade(&this)));
        Ok(this)
    }

    fn new(source: KeySource, issuer: &str, audiences: Option<Vec<String>>) -> Self {
        OfflineVerifier {
            source,
            issuer: issuer.to_owned(),
            keys: RwLock::new(Arc::new(TokenVerifier::new(&Jwks::default(), issuer))),
            audiences,
            last_refetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            revoked: RwLock::default(),
            accept_dev: AtomicBool::new(false),
            dpop_seen: Mutex::new(ReplayCache::new(dpop::DEFAULT_REPLAY_CAPACITY)),
            tasks: Mutex::default(),
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task).abort_handle();
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }

    /// How many times the JWKS has been read (at start, periodically, and for
    /// unknown key ids).
    pub fn key_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Reads the JWKS and replaces the keys tokens are checked against.
    async fn fetch_keys(&self) -> Result<(), ClientError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let jwks = match &self.source {
            KeySource::Remote { http, jwks_url } => {
                let res = http
                    .get(jwks_url)
                    .send()
                    .await
                    .map_err(|_| ClientError::Connect(jwks_url.clone()))?;
                read_json::<Jwks>(res).await?
            }
            KeySource::Local(hub) => hub.jwks(),
        };
        let mut verifier = TokenVerifier::new(&jwks, self.issuer.as_str());
        if let Some(a) = &self.audiences {
            verifier = verifier.with_audiences(a.clone());
        }
        let verifier = Arc::new(verifier);
        match self.keys.write() {
            Ok(mut keys) => *keys = verifier,
            Err(p) => *p.into_inner() = verifier,
        }
        Ok(())
    }

    /// Whether a token with an unknown key id may cause a JWKS read now; if so,
    /// the next one may only after [`KEY_REFETCH_INTERVAL`].
    fn claim_refetch(&self) -> bool {
        let Ok(mut last) = self.last_refetch.lock() else {
            return false;
        };
        match *last {
            Some(t) if t.elapsed() < KEY_REFETCH_INTERVAL => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    async fn refresh_periodically(this: Weak<Self>) {
        let mut tick = tokio::time::interval(KEY_REFRESH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(me) = this.upgrade() else { return };
            if let Err(e) = me.fetch_keys().await {
                tracing::warn!(error = %e, "could not refresh the hub's signing keys");
            }
        }
    }

    fn apply(&self, sid: &str, expires_at: UnixTime) {
        if let Ok(mut map) = self.revoked.write() {
            map.insert(sid.to_owned(), expires_at);
        }
    }

    fn apply_json(&self, event: &serde_json::Value) {
        if let (Some(sid), Some(exp)) = (event["session_id"].as_str(), event["expires_at"].as_i64())
        {
            self.apply(sid, exp);
        }
    }

    /// Follows `/v1/revocations/ws`, reconnecting after a second when it drops,
    /// until the verifier is dropped.
    async fn follow(this: Weak<Self>, ws_base: String, mut cursor: i64) {
        loop {
            let url = format!("{ws_base}/v1/revocations/ws?since={cursor}");
            let connect = tokio_tungstenite::connect_async(url.as_str());
            if let Ok(Ok((mut ws, _))) =
                tokio::time::timeout(Duration::from_secs(10), connect).await
            {
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&t) else {
                        continue;
                    };
                    let Some(me) = this.upgrade() else { return };
                    me.apply_json(&event);
                    cursor = cursor.max(event["seq"].as_i64().unwrap_or(cursor));
                }
            }
            if this.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Applies the in-process Hub's revocations after `cursor`; returns the new cursor.
    async fn read_local_backlog(
        &self,
        hub: &dyn TokenAuthority,
        mut cursor: i64,
    ) -> Result<i64, Error> {
        loop {
            let feed = hub.revocation_feed(cursor).await?;
            for e in &feed.revocations {
                self.apply(&e.session_id, e.expires_at);
            }
            if feed.revocations.is_empty() || feed.cursor <= cursor {
                return Ok(cursor);
            }
            cursor = feed.cursor;
        }
    }

    /// Follows the in-process Hub's revocation broadcast; when it falls behind,
    /// catches up from the store.
    async fn follow_local(
        this: Weak<Self>,
        hub: Arc<dyn TokenAuthority>,
        mut live: broadcast::Receiver<RevocationEvent>,
        mut cursor: i64,
    ) {
        loop {
            let event = live.recv().await;
            let Some(me) = this.upgrade() else { return };
            match event {
                Ok(e) => {
                    me.apply(&e.session_id, e.expires_at);
                    cursor = cursor.max(e.seq);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => loop {
                    match me.read_local_backlog(&*hub, cursor).await {
                        Ok(c) => {
                            cursor = c;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "revocation backlog read failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Whether the feed has reported this session revoked: lets a caller that
    /// caches verified claims (the gateway) re-check revocation alone.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.revoked
            .read()
            .map(|map| map.contains_key(sid))
            .unwrap_or(true)
    }

    /// Verifies a token with the keys known now: signature, claims, and that its
    /// session is not revoked. A token naming an unknown key is refused, and makes
    /// the verifier read the JWKS again in the background (at most once per
    /// [`KEY_REFETCH_INTERVAL`]); [`OfflineVerifier::verify_async`] waits for that
    /// read instead.
    pub fn verify(self: &Arc<Self>, token: &str, now: UnixTime) -> Result<AccessClaims, Error> {
        let result = self.check(token, now);
        if result == Err(Error::Token(TokenError::UnknownKey))
            && self.claim_refetch()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let me = self.clone();
            rt.spawn(async move {
                let _ = tokio::time::timeout(KEY_FETCH_WAIT, me.fetch_keys()).await;
            });
        }
        result
    }

    /// Like [`OfflineVerifier::verify`], but a token naming an unknown key waits
    /// for the JWKS to be read again (when allowed, or when another request is
    /// reading it) and is then checked against the new keys.
    pub async fn verify_async(&self, token: &str, now: UnixTime) -> Result<AccessClaims, Error> {
        let result = self.check(token, now);
        if result != Err(Error::Token(TokenError::UnknownKey)) {
            return result;
        }
        let Ok(_reading) = tokio::time::timeout(KEY_FETCH_WAIT, self.fetching.lock()).await else {
            return result;
        };
        if self.claim_refetch()
            && let Ok(Err(e)) = tokio::time::timeout(KEY_FETCH_WAIT, self.fetch_keys()).await
        {
            tracing::warn!(error = %e, "could not read the hub's signing keys");
        }
        self.check(token, now)
    }

    /// Verifies the token of a request and its key binding (RFC 9449 §7,
    /// docs/dpop.md): a bearer token as `Authorization: Bearer`, a key-bound token
    /// (`cnf.jkt`) only as `Authorization: DPoP` with a `DPoP` proof by its key for
    /// this method and URL, fresh, not seen before by this verifier (a bounded
    /// replay cache of [`keygate_core::dpop::DEFAULT_REPLAY_CAPACITY`] entries).
    pub fn verify_request(
        self: &Arc<Self>,
        req: &Presented<'_>,
        now: UnixTime,
    ) -> Result<AccessClaims, Error> {
        let (scheme, token) = req
            .authorization
            .and_then(|v| v.split_once(' '))
            .map(|(s, t)| (s, t.trim()))
            .ok_or(Error::MissingToken)?;
        let dpop_scheme = scheme.eq_ignore_ascii_case("dpop");
        if !dpop_scheme && !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::MissingToken);
        }
        let claims = self
            .verify(token, now)
            .map_err(|e| e.under_scheme(dpop_scheme))?;
        let Some(jkt) = dpop::bound_key(claims.cnf.as_ref(), dpop_scheme)?.map(str::to_owned)
        else {
            return Ok(claims);
        };
        let refuse = |error| Error::Dpop {
            error,
            at_issue: false,
        };
        let expect = dpop::Expect {
            htm: req.method,
            htu: &[req.url],
            token: Some(token),
            keys: dpop::Keys::Any,
            nonces: None,
        };
        let proof = dpop::verify(req.dpop.ok_or(refuse(DpopError::Missing))?, &expect, now)
            .map_err(refuse)?;
        if proof.jkt != jkt {
            return Err(refuse(DpopError::WrongKey));
        }
        self.dpop_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&proof, now)
            .map_err(|e| match e {
                DpopError::Busy => Error::RateLimited { retry_after: 1 },
                e => refuse(e),
            })?;
        Ok(claims)
    }

    /// Accepts (or, the default, refuses with `403 forbidden`) tokens minted by a
    /// development key (docs/dev-mode.md). Only for local testing.
    pub fn accept_dev_tokens(&self, accept: bool) {
        self.accept_dev.store(accept, Ordering::Relaxed);
    }

    fn check(&self, token: &str, now: UnixTime) -> Result<AccessClaims, Error> {
        let keys = match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let claims = keys.verify(token, now)?;
        if !self.accept_dev.load(Ordering::Relaxed) && keygate_core::account::is_dev_token(&claims)
        {
            return Err(Error::Forbidden(
                keygate_core::account::DEV_TOKEN_REFUSED.into(),
            ));
        }
        let revoked = match self.revoked.read() {
            Ok(map) => map.contains_key(&claims.sid),
            Err(_) => true,
        };
        if revoked {
            return Err(Error::SessionRevoked);
        }
        if let Ok(mut map) = self.revoked.try_write()
            && map.len() > 10_000
        {
            map.retain(|_, exp| *exp + keygate_core::token::MAX_LEEWAY > now);
        }
        Ok(claims)
    }
}
