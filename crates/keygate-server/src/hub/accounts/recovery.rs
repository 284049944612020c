//! The recovery key's one use (docs/accounts.md, "Recovery key"): a new
//! device's signed-in key joins the account.

use super::*;

impl Hub {
    /// `POST /v1/account/recover/challenge`: a recovery challenge for the
    /// caller's key to join the account whose recovery key is `recovery_key`,
    /// to be signed by both keys (docs/accounts.md, "Recovery key").
    pub async fn recovery_challenge(
        &self,
        token: impl Into<Credential<'_>>,
        recovery_key: &str,
    ) -> Result<IssuedChallenge, Error> {
        let cred = token.into();
        let (claims, _) = self.authenticate(cred, true).await?;
        let recovery = Identity::parse(recovery_key)?.to_string();
        let ctx = self.store.sign_in_context(&recovery, &claims.aud).await?;
        let Some(account) = ctx.account.filter(|_| ctx.recovery) else {
            return Err(Error::Forbidden(NOT_A_RECOVERY_KEY.into()));
        };
        self.statement(
            Kind::Recovery,
            &[&claims.aud, &account, &recovery, &claims.sub, &claims.sid],
        )
    }

    /// `POST /v1/account/recover`: the recovery key's and the caller's signatures
    /// over one recovery challenge. The caller's key joins the account, every
    /// other session of the account ends, the recovery key is spent, and the
    /// caller's session is raised to `aal2` in the account.
    pub async fn recover_with_key(
        &self,
        token: impl Into<Credential<'_>>,
        challenge: &str,
        sig: &str,
        new_sig: &str,
        label: Option<&str>,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let result = self
            .use_recovery(&claims, &auth, challenge, sig, new_sig, label)
            .await;
        let mut event = self
            .user_event(
                AuditKind::RecoveryUsed,
                &claims,
                &auth.session.api_key,
                &cred,
            )
            .session(&auth.session.id);
        match &result {
            Ok((account, revoked, _)) => {
                event = event
                    .account(Some(account))
                    .detail(format!("revoked {revoked}"));
                if *revoked > 0 {
                    let ended = self
                        .user_event(
                            AuditKind::SessionRevoked,
                            &claims,
                            &auth.session.api_key,
                            &cred,
                        )
                        .account(Some(account));
                    self.record(ended.detail("recovery"));
                }
            }
            Err(e) => event = event.outcome(e.code()),
        }
        self.record(event);
        result.map(|(_, _, token)| token)
    }

    /// [`Hub::recover_with_key`] after authentication: the recovered account, how
    /// many sessions ended, and the raised token.
    async fn use_recovery(
        &self,
        claims: &AccessClaims,
        auth: &SessionAuth,
        challenge: &str,
        sig: &str,
        new_sig: &str,
        label: Option<&str>,
    ) -> Result<(String, u64, IssuedToken), Error> {
        if label.is_some_and(|l| !account::valid_label(l) || l == RECOVERY_LABEL) {
            return Err(Error::bad_request(
                "label must be 1 to 64 characters without control characters, not \"recovery\"",
            ));
        }
        let now = self.now();
        let s = account::verify(&self.nonce_key, Kind::Recovery, challenge, now)?;
        if s.value(0) != claims.aud || s.value(3) != claims.sub || s.value(4) != claims.sid {
            return Err(crate::challenge::ChallengeError::WrongAudience.into());
        }
        let recovery = Identity::parse(s.value(2))?;
        account::verify_signature(&recovery, challenge, sig)?;
        account::verify_signature(&Identity::parse(&claims.sub)?, challenge, new_sig)?;
        let until = Self::raised_until(auth, now);
        let account = s.value(1).to_owned();
        let used = UseRecovery {
            nonce_id: s.nonce_id,
            nonce_expires_at: s.expires_at,
            account: account.clone(),
            recovery: recovery.to_string(),
            identity: claims.sub.clone(),
            session_id: claims.sid.clone(),
            label: label.map(str::to_owned),
            aal2_until: until,
            now,
        };
        let revoked = match self.store.use_recovery_key(used).await? {
            RecoveryOutcome::Recovered(n) => n,
            RecoveryOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            RecoveryOutcome::RecoveryGone => {
                return Err(Error::Forbidden(NOT_A_RECOVERY_KEY.into()));
            }
            RecoveryOutcome::InOtherAccount => return Err(Error::KeyInOtherAccount),
            RecoveryOutcome::SessionGone => return Err(Error::SessionRevoked),
        };
        let token = self
            .mint_raised(auth, Some(account.clone()), Factor::Recovery, until, now)
            .await?;
        Ok((account, revoked, token))
    }
}
