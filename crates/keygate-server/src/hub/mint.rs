//! Minting access tokens for a grant.

use super::{Hub, IssuedToken};
use crate::session;
use crate::store::ApiKeyRecord;
use crate::time::{UnixTime, format_rfc3339};
use crate::token::AccessClaimsRef;

/// Who and what a token is for.
pub(super) struct Grant<'a> {
    pub(super) subject: &'a str,
    pub(super) app: &'a str,
    pub(super) session_id: &'a str,
    pub(super) scope: &'a str,
    pub(super) client_id: Option<String>,
    pub(super) role: Option<String>,
    /// The key's account (none for brokered tokens).
    pub(super) account: Option<String>,
    /// What the token asserts (`acr`, `amr`); none for brokered tokens.
    pub(super) assurance: Option<crate::account::Assurance>,
    /// The key the token is bound to (`cnf.jkt`, docs/dpop.md).
    pub(super) jkt: Option<&'a str>,
}

impl Hub {
    pub(super) fn mint(
        &self,
        grant: Grant<'_>,
        key: &ApiKeyRecord,
        expiration: Option<i64>,
        now: UnixTime,
        session_expires_at: UnixTime,
        refresh_token: Option<String>,
    ) -> IssuedToken {
        let policy = &key.policy;
        // Every token a development key's app gets says so, whatever the way in.
        let grant = if key.dev {
            Grant {
                assurance: Some(crate::account::Assurance::Dev),
                ..grant
            }
        } else {
            grant
        };
        let mut exp = policy.access_expiry(expiration, now, session_expires_at);
        // A step-up's token ends with the step-up: after it, the session's tokens
        // say aal1 again.
        if let Some(crate::account::Assurance::Aal2 { until, .. }) = grant.assurance {
            exp = exp.min(until);
        }
        let amr = grant.assurance.map(|a| a.amr());
        let jti = session::random_id(&mut self.entropy.rng());
        let claims = AccessClaimsRef {
            iss: &self.config.issuer,
            sub: grant.subject,
            aud: grant.app,
            iat: now,
            nbf: now,
            exp,
            jti: &jti,
            sid: grant.session_id,
            scope: grant.scope,
            // RFC 9068 §2.2: always present; the app's key id when the sign-in
            // named no client.
            client_id: Some(grant.client_id.as_deref().unwrap_or(grant.app)),
            role: grant.role.as_deref(),
            acct: grant.account.as_deref(),
            acr: grant.assurance.map(|a| a.acr()),
            amr: amr.as_deref(),
            cnf: grant.jkt.map(|jkt| crate::token::ConfirmationRef { jkt }),
        };
        let pending = grant.assurance == Some(crate::account::Assurance::Pending);
        crate::metrics::metrics().token_minted();
        IssuedToken {
            token: if pending {
                self.ring().signer.mint_pending(&claims)
            } else {
                self.ring().signer.mint(&claims)
            },
            mfa_required: pending,
            token_type: if grant.jkt.is_some() {
                keygate_core::dpop::TOKEN_TYPE
            } else {
                "Bearer"
            }
            .into(),
            expires_at: format_rfc3339(exp),
            expires_in: exp - now,
            session_id: grant.session_id.to_owned(),
            refresh_token,
        }
    }
}
