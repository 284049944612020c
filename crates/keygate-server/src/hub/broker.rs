//! Brokered tokens: a one-time token id an app hands to its user.

use super::{BrokerToken, ClientMeta, Hub, IssuedToken, truncate};
use crate::error::Error;
use crate::session;
use crate::store::{ApiKeyRecord, BrokerGrant, NewSession};
use crate::time::format_rfc3339;

use super::Grant;

/// Default and longest lifetime of a brokered token id.
pub const BROKER_DEFAULT_TTL: i64 = 300;
pub const BROKER_MAX_TTL: i64 = 3600;

impl Hub {
    /// `POST /v1/broker/tokens`: a one-time token id the app hands to its user.
    pub async fn create_broker_token(
        &self,
        app: &ApiKeyRecord,
        endpoint_id: &str,
        role: &str,
        ttl: Option<i64>,
    ) -> Result<BrokerToken, Error> {
        if !app.can_broker {
            return Err(Error::Forbidden(
                "this API key may not broker tokens".into(),
            ));
        }
        if endpoint_id.is_empty()
            || endpoint_id.len() > 128
            || !endpoint_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::bad_request(
                "endpoint_id must be 1 to 128 visible ASCII characters",
            ));
        }
        if role.is_empty()
            || role.len() > 64
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(Error::bad_request("role must be 1 to 64 of [A-Za-z0-9_.-]"));
        }
        let ttl = ttl.unwrap_or(BROKER_DEFAULT_TTL);
        if !(1..=BROKER_MAX_TTL).contains(&ttl) {
            return Err(Error::bad_request("ttl must be between 1 and 3600 seconds"));
        }
        let token_id = session::new_secret_token(&mut self.entropy.rng(), session::BROKER_PREFIX);
        let expires_at = self.now() + ttl;
        self.store
            .insert_broker_token(BrokerGrant {
                hash: session::hash_secret(&token_id),
                api_key: app.id.clone(),
                endpoint_id: endpoint_id.to_owned(),
                role: role.to_owned(),
                expires_at,
            })
            .await?;
        Ok(BrokerToken {
            token_id,
            expires_at: format_rfc3339(expires_at),
        })
    }

    /// `POST /v1/session-tokens`: exchanges a brokered token id, once, for an access
    /// token whose subject is `<key id>:<endpoint id>`.
    pub async fn exchange_broker_token(
        &self,
        token_id: &str,
        meta: ClientMeta,
    ) -> Result<IssuedToken, Error> {
        if !token_id.starts_with(session::BROKER_PREFIX) || token_id.len() > 128 {
            return Err(Error::InvalidGrant);
        }
        let now = self.now();
        let draft = NewSession {
            jkt: None,
            id: session::random_id(&mut self.entropy.rng()),
            subject: String::new(),
            api_key: String::new(),
            client_id: None,
            scope: String::new(),
            created_at: now,
            expires_at: now,
            idle_timeout: 0,
            user_agent: meta.user_agent.map(|s| truncate(s, 256)),
            address: meta.address,
        };
        let (s, role) = self
            .store
            .exchange_broker_token(session::hash_secret(token_id), draft, now)
            .await?
            .ok_or(Error::InvalidGrant)?;
        let key = self
            .live_api_key(&s.api_key)
            .await
            .map_err(|_| Error::InvalidGrant)?;
        let key = self.usable(key)?;
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: &s.scope,
                client_id: None,
                role: Some(role),
                account: None,
                assurance: None,
                jkt: None,
            },
            &key,
            None,
            now,
            s.expires_at,
            None,
        ))
    }
}
