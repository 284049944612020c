//! Second factors and step-up (docs/accounts.md): a challenge for another key of
//! the account, TOTP enrolment and codes, and raising a session to `aal2`.

use super::*;

impl Hub {
    /// `POST /v1/mfa/challenge`: a step-up challenge for `second_key` (another key
    /// of the caller's account) to sign for the caller's session.
    pub async fn mfa_challenge(
        &self,
        token: impl Into<Credential<'_>>,
        second_key: &str,
    ) -> Result<IssuedChallenge, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?;
        let second = self.second_key(account, &claims, second_key).await?;
        self.statement(
            Kind::StepUp,
            &[&claims.aud, account, &second.to_string(), &claims.sid],
        )
    }

    /// A key of `account` other than the session's own and its recovery key.
    async fn second_key(
        &self,
        account: &str,
        claims: &AccessClaims,
        key: &str,
    ) -> Result<Identity, Error> {
        let key = Identity::parse(key)?;
        let id = key.to_string();
        let keys = self.device_keys(account).await?;
        if id == claims.sub || !keys.iter().any(|k| k.identity == id) {
            return Err(Error::Forbidden(
                "the second factor must be another key of this account".into(),
            ));
        }
        Ok(key)
    }

    /// `POST /v1/mfa/key`: the second key's signature over the step-up challenge.
    pub async fn mfa_by_key(
        &self,
        token: impl Into<Credential<'_>>,
        challenge: &str,
        sig: &str,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?;
        let s = account::verify(&self.nonce_key, Kind::StepUp, challenge, self.now())?;
        if s.value(0) != claims.aud || s.value(1) != account || s.value(3) != claims.sid {
            return Err(crate::challenge::ChallengeError::WrongAudience.into());
        }
        let second = self.second_key(account, &claims, s.value(2)).await?;
        let result = match account::verify_signature(&second, challenge, sig) {
            Ok(()) => {
                let proof = MfaProof::Nonce {
                    id: s.nonce_id,
                    expires_at: s.expires_at,
                };
                self.raise(&auth, Factor::Key, proof).await
            }
            Err(e) => Err(e.into()),
        };
        self.record_mfa(&cred, &claims, &auth, Factor::Key, &result);
        result
    }

    /// Records a second factor's check: `mfa_verified`, or `mfa_failed` with the
    /// error's code.
    fn record_mfa(
        &self,
        cred: &Credential<'_>,
        claims: &AccessClaims,
        auth: &SessionAuth,
        factor: Factor,
        result: &Result<IssuedToken, Error>,
    ) {
        let kind = match result {
            Ok(_) => AuditKind::MfaVerified,
            Err(_) => AuditKind::MfaFailed,
        };
        let mut event = self
            .user_event(kind, claims, &auth.session.api_key, cred)
            .session(&auth.session.id)
            .detail(factor.as_str());
        if let Err(e) = result {
            event = event.outcome(e.code());
        }
        self.record(event);
    }

    /// `POST /v1/mfa/totp`: a new TOTP secret for the caller's account, shown once;
    /// it counts as a factor once a code of it has been accepted.
    pub async fn totp_enrol(
        &self,
        token: impl Into<Credential<'_>>,
    ) -> Result<TotpEnrolment, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?.to_owned();
        self.may_change_account(&auth, &account).await?;
        let mut secret = [0u8; account::TOTP_SECRET_LEN];
        self.entropy.fill(&mut secret);
        let totp = account::totp(&secret, "keygate", &account);
        let otpauth_uri = totp.to_url().map_err(|_| Error::Internal)?;
        self.store
            .enrol_totp(&account, secret.to_vec(), self.now())
            .await?;
        let event = self.user_event(
            AuditKind::MfaEnrolled,
            &claims,
            &auth.session.api_key,
            &cred,
        );
        self.record(
            event
                .session(&auth.session.id)
                .detail(Factor::Totp.as_str()),
        );
        Ok(TotpEnrolment {
            secret: totp.secret().to_base32(),
            otpauth_uri,
        })
    }

    /// `POST /v1/mfa/totp/verify`: a TOTP code raises the session (and confirms a
    /// fresh enrolment). Attempts are rate-limited per account; a code is accepted
    /// once (a later step's code is needed after it).
    pub async fn totp_verify(
        &self,
        token: impl Into<Credential<'_>>,
        code: &str,
    ) -> Result<IssuedToken, Error> {
        let cred = token.into();
        let (claims, auth) = self.authenticate(cred, true).await?;
        let account = Self::account_of(&auth)?.to_owned();
        let result = async {
            self.guard.check_totp(&account)?;
            let record = self.store.totp(&account).await?.ok_or_else(|| {
                Error::Forbidden("no TOTP secret is enrolled for this account".into())
            })?;
            let step = account::check_totp(&record.secret, code.trim(), self.now())
                .ok_or(Error::InvalidOtp)?;
            if step <= record.last_step {
                return Err(Error::OtpReused);
            }
            let proof = MfaProof::TotpStep { account, step };
            self.raise(&auth, Factor::Totp, proof).await
        }
        .await;
        self.record_mfa(&cred, &claims, &auth, Factor::Totp, &result);
        result
    }

    /// Until when a session raised now counts as `aal2`: as long as the session
    /// when its app requires MFA, else for [`STEP_UP_TTL`], and never less than an
    /// earlier raise.
    pub(super) fn raised_until(auth: &SessionAuth, now: UnixTime) -> UnixTime {
        let s = &auth.session;
        let mut until = if auth.mfa_required {
            s.expires_at
        } else {
            (now + STEP_UP_TTL).min(s.expires_at)
        };
        if let Some((_, earlier)) = &auth.raised {
            until = until.max(*earlier);
        }
        until
    }

    /// Spends `proof`, raises the session to `aal2` (see [`Hub::raised_until`])
    /// and mints its raised token.
    async fn raise(
        &self,
        auth: &SessionAuth,
        factor: Factor,
        proof: MfaProof,
    ) -> Result<IssuedToken, Error> {
        let now = self.now();
        let until = Self::raised_until(auth, now);
        let done = MfaCompletion {
            session_id: auth.session.id.clone(),
            factor: factor.as_str().to_owned(),
            aal2_until: until,
            proof,
            now,
        };
        match self.store.complete_mfa(done).await? {
            MfaOutcome::Raised => {}
            MfaOutcome::ChallengeUsed => return Err(Error::ChallengeUsed),
            MfaOutcome::CodeUsed => return Err(Error::OtpReused),
            MfaOutcome::SessionGone => return Err(Error::SessionRevoked),
        }
        self.mint_raised(auth, auth.account.clone(), factor, until, now)
            .await
    }

    /// The token of a session just raised to `aal2` until `until`, in `account`.
    pub(super) async fn mint_raised(
        &self,
        auth: &SessionAuth,
        account: Option<String>,
        factor: Factor,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<IssuedToken, Error> {
        let s = &auth.session;
        let key = self
            .live_api_key(&s.api_key)
            .await
            .map_err(|_| Error::SessionRevoked)?;
        Ok(self.mint(
            Grant {
                subject: &s.subject,
                app: &s.api_key,
                session_id: &s.id,
                scope: &s.scope,
                client_id: s.client_id.clone(),
                role: None,
                account,
                assurance: Some(Assurance::Aal2 { factor, until }),
                jkt: s.jkt.as_deref(),
            },
            &key,
            None,
            now,
            s.expires_at,
            None,
        ))
    }
}
