//! [`AccountStore`] on the SQL store (tables of migration 0002), for either
//! database.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Encode, Executor, Type};

use super::{Backend, SqlStore};
use crate::account::{Factor, RECOVERY_LABEL};
use crate::store::accounts::*;
use crate::store::rows::{Columns, SESSION_COLUMNS, session_from_row};
use crate::store::{Revoke, StoreResult};
use crate::time::UnixTime;

fn totp_context(account: &str) -> String {
    format!("account_totp:{account}")
}

// Transaction helpers of the account side, with the bounds they need.
impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
{
    /// How many keys and confirmed TOTP secrets an account has, in a transaction.
    async fn account_size_in(conn: &mut B::Connection, account: &str) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM account_keys WHERE account_id = $1) + \
             (SELECT COUNT(*) FROM account_totp WHERE account_id = $1 \
              AND confirmed_at IS NOT NULL) AS n",
        )
        .bind(account)
        .fetch_one(conn)
        .await?;
        Ok(row.int("n")?)
    }

    /// Adds a key to an account, in a transaction.
    async fn insert_key_in(
        conn: &mut B::Connection,
        identity: &str,
        account: &str,
        label: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO account_keys (identity, account_id, label, added_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(identity)
        .bind(account)
        .bind(label)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Takes a key out of its account, in a transaction.
    async fn delete_key_in(conn: &mut B::Connection, identity: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM account_keys WHERE identity = $1")
            .bind(identity)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Raises a session to `aal2` with `factor` until `until`, in a transaction.
    async fn raise_in(
        conn: &mut B::Connection,
        session: &str,
        factor: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO session_mfa (session_id, factor, aal2_until, raised_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO UPDATE SET \
             factor = excluded.factor, aal2_until = excluded.aal2_until, \
             raised_at = excluded.raised_at",
        )
        .bind(session)
        .bind(factor)
        .bind(until)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }
}

// The bounds of `SqlStore`'s impl blocks in `sql.rs`; see there.
impl<B: Backend> AccountStore for SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    fn sign_in_context<'a>(
        &'a self,
        identity: &'a str,
        api_key: &'a str,
    ) -> BoxFuture<'a, StoreResult<SignInContext>> {
        async move {
            let row = sqlx::query(
                "SELECT (SELECT account_id FROM account_keys WHERE identity = $1) AS account, \
                 COALESCE((SELECT required FROM api_key_mfa WHERE key_id = $2), 0) AS mfa, \
                 (SELECT COUNT(*) FROM account_keys WHERE identity = $1 AND label = $3) \
                   AS recovery",
            )
            .bind(identity)
            .bind(api_key)
            .bind(RECOVERY_LABEL)
            .fetch_one(&self.read)
            .await?;
            Ok(SignInContext {
                account: row.opt_text("account")?,
                mfa_required: row.int("mfa")? != 0,
                recovery: row.int("recovery")? != 0,
            })
        }
        .boxed()
    }

    fn session_auth<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<SessionAuth>>> {
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS}, \
                 (SELECT account_id FROM account_keys WHERE identity = sessions.subject) AS acct, \
                 COALESCE((SELECT required FROM api_key_mfa WHERE key_id = sessions.api_key), 0) \
                   AS mfa_required, \
                 (SELECT factor FROM session_mfa WHERE session_id = sessions.id) AS factor, \
                 (SELECT aal2_until FROM session_mfa WHERE session_id = sessions.id) AS aal2_until \
                 FROM sessions WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let factor = row.opt_text("factor")?;
            let until = row.opt_int("aal2_until")?;
            Ok(Some(SessionAuth {
                session: session_from_row(&row)?,
                account: row.opt_text("acct")?,
                mfa_required: row.int("mfa_required")? != 0,
                raised: factor.zip(until),
            }))
        }
        .boxed()
    }

    fn refresh_session_id(&self, hash: [u8; 32]) -> BoxFuture<'_, StoreResult<Option<String>>> {
        async move {
            let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.read)
                .await?;
            Ok(row.map(|r| r.text("session_id")).transpose()?)
        }
        .boxed()
    }

    fn account_keys<'a>(&'a self, account: &'a str) -> BoxFuture<'a, StoreResult<Vec<AccountKey>>> {
        async move {
            let rows = sqlx::query(
                "SELECT identity, label, added_at, \
                 (SELECT MAX(last_used_at) FROM sessions WHERE subject = account_keys.identity) \
                   AS last_used_at \
                 FROM account_keys WHERE account_id = $1 ORDER BY added_at, identity",
            )
            .bind(account)
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(AccountKey {
                        identity: r.text("identity")?,
                        label: r.opt_text("label")?,
                        added_at: r.int("added_at")?,
                        last_used_at: r.opt_int("last_used_at")?,
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn link_key(&self, link: LinkKey) -> BoxFuture<'_, StoreResult<LinkOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            if !Self::spend_nonce(&mut tx, &link.nonce_id, link.nonce_expires_at).await? {
                return Ok(LinkOutcome::ChallengeUsed);
            }
            if Self::account_in(&mut tx, &link.inviter).await?.as_deref() != Some(&link.account) {
                tx.commit().await?;
                return Ok(LinkOutcome::InviterGone);
            }
            let outcome = match Self::account_in(&mut tx, &link.identity).await? {
                Some(a) if a == link.account => LinkOutcome::AlreadyLinked,
                Some(other) => {
                    if Self::account_size_in(&mut tx, &other).await? > 1 {
                        LinkOutcome::InOtherAccount
                    } else {
                        sqlx::query("DELETE FROM account_totp WHERE account_id = $1")
                            .bind(other.as_str())
                            .execute(&mut *tx)
                            .await?;
                        Self::delete_key_in(&mut tx, &link.identity).await?;
                        let which = Revoke::AllOf {
                            subject: &link.identity,
                        };
                        Self::revoke_in(&mut tx, &which, link.now).await?;
                        LinkOutcome::Linked
                    }
                }
                None => LinkOutcome::Linked,
            };
            if outcome == LinkOutcome::Linked {
                if link.label.as_deref() == Some(RECOVERY_LABEL) {
                    // The account's previous recovery key goes.
                    sqlx::query("DELETE FROM account_keys WHERE account_id = $1 AND label = $2")
                        .bind(link.account.as_str())
                        .bind(RECOVERY_LABEL)
                        .execute(&mut *tx)
                        .await?;
                }
                let label = link.label.as_deref();
                Self::insert_key_in(&mut tx, &link.identity, &link.account, label, link.now)
                    .await?;
            }
            tx.commit().await?;
            Ok(outcome)
        }
        .boxed()
    }

    fn remove_account_key<'a>(
        &'a self,
        account: &'a str,
        identity: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RemoveKeyOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            if Self::account_in(&mut tx, identity).await?.as_deref() != Some(account) {
                return Ok(RemoveKeyOutcome::NotFound);
            }
            let keys = sqlx::query("SELECT COUNT(*) AS n FROM account_keys WHERE account_id = $1")
                .bind(account)
                .fetch_one(&mut *tx)
                .await?
                .int("n")?;
            if keys <= 1 {
                return Ok(RemoveKeyOutcome::LastKey);
            }
            sqlx::query("DELETE FROM account_keys WHERE identity = $1")
                .bind(identity)
                .execute(&mut *tx)
                .await?;
            let n = Self::revoke_in(&mut tx, &Revoke::AllOf { subject: identity }, now).await?;
            tx.commit().await?;
            Ok(RemoveKeyOutcome::Removed(n))
        }
        .boxed()
    }

    fn recover_account<'a>(
        &'a self,
        account: &'a str,
        identity: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RecoverOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            let keys_sql = format!(
                "SELECT identity FROM account_keys WHERE account_id = $1{}",
                B::FOR_UPDATE
            );
            let keys = sqlx::query(sqlx::AssertSqlSafe(keys_sql.clone()))
                .bind(account)
                .fetch_all(&mut *tx)
                .await?;
            if keys.is_empty() {
                return Ok(RecoverOutcome::NoSuchAccount);
            }
            match Self::account_in(&mut tx, identity).await? {
                Some(a) if a == account => {}
                Some(other) => {
                    let theirs = sqlx::query(sqlx::AssertSqlSafe(keys_sql.clone()))
                        .bind(other.as_str())
                        .fetch_all(&mut *tx)
                        .await?;
                    if theirs.len() > 1 {
                        return Ok(RecoverOutcome::InOtherAccount);
                    }
                    sqlx::query("UPDATE account_keys SET account_id = $1, added_at = $2 WHERE identity = $3")
                        .bind(account)
                        .bind(now)
                        .bind(identity)
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO account_keys (identity, account_id, added_at) VALUES ($1, $2, $3)",
                    )
                    .bind(identity)
                    .bind(account)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let mut revoked = 0;
            let keys = sqlx::query(sqlx::AssertSqlSafe(keys_sql))
                .bind(account)
                .fetch_all(&mut *tx)
                .await?;
            for row in keys {
                let subject = row.text("identity")?;
                revoked += Self::revoke_in(&mut tx, &Revoke::AllOf { subject: &subject }, now).await?;
            }
            tx.commit().await?;
            Ok(RecoverOutcome::Recovered(revoked))
        }
        .boxed()
    }

    fn use_recovery_key(&self, r: UseRecovery) -> BoxFuture<'_, StoreResult<RecoveryOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            if !Self::spend_nonce(&mut tx, &r.nonce_id, r.nonce_expires_at).await? {
                return Ok(RecoveryOutcome::ChallengeUsed);
            }
            // Spent first: of two recoveries with one key at once, the second
            // waits for this row (PostgreSQL) and then finds it gone.
            let spent = sqlx::query(
                "DELETE FROM account_keys WHERE identity = $1 AND account_id = $2 AND label = $3",
            )
            .bind(r.recovery.as_str())
            .bind(r.account.as_str())
            .bind(RECOVERY_LABEL)
            .execute(&mut *tx)
            .await?;
            if B::rows_affected(&spent) != 1 {
                tx.commit().await?;
                return Ok(RecoveryOutcome::RecoveryGone);
            }
            let live = sqlx::query(
                "SELECT 1 AS live FROM sessions WHERE id = $1 AND subject = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at + idle_timeout > $3",
            )
            .bind(r.session_id.as_str())
            .bind(r.identity.as_str())
            .bind(r.now)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Ok(RecoveryOutcome::SessionGone);
            }
            match Self::account_in(&mut tx, &r.identity).await? {
                Some(a) if a == r.account => {}
                other => {
                    if let Some(other) = other {
                        if Self::account_size_in(&mut tx, &other).await? > 1 {
                            return Ok(RecoveryOutcome::InOtherAccount);
                        }
                        sqlx::query("DELETE FROM account_totp WHERE account_id = $1")
                            .bind(other.as_str())
                            .execute(&mut *tx)
                            .await?;
                        Self::delete_key_in(&mut tx, &r.identity).await?;
                    }
                    let label = r.label.as_deref();
                    Self::insert_key_in(&mut tx, &r.identity, &r.account, label, r.now).await?;
                }
            }
            let keys = sqlx::query("SELECT identity FROM account_keys WHERE account_id = $1")
                .bind(r.account.as_str())
                .fetch_all(&mut *tx)
                .await?;
            let mut revoked = 0;
            for row in keys {
                let subject = row.text("identity")?;
                let which = if subject == r.identity {
                    Revoke::AllOfExcept {
                        subject: &subject,
                        keep: &r.session_id,
                    }
                } else {
                    Revoke::AllOf { subject: &subject }
                };
                revoked += Self::revoke_in(&mut tx, &which, r.now).await?;
            }
            Self::raise_in(
                &mut tx,
                &r.session_id,
                Factor::Recovery.as_str(),
                r.aal2_until,
                r.now,
            )
            .await?;
            tx.commit().await?;
            Ok(RecoveryOutcome::Recovered(revoked))
        }
        .boxed()
    }

    fn set_mfa_required<'a>(
        &'a self,
        api_key: &'a str,
        required: bool,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO api_key_mfa (key_id, required) VALUES ($1, $2) \
                 ON CONFLICT (key_id) DO UPDATE SET required = excluded.required",
            )
            .bind(api_key)
            .bind(i64::from(required))
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn enrol_totp<'a>(
        &'a self,
        account: &'a str,
        secret: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO account_totp (account_id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (account_id) DO UPDATE SET secret = excluded.secret, \
                 created_at = excluded.created_at, confirmed_at = NULL, last_step = 0",
            )
            .bind(account)
            .bind(&self.seal.seal(&totp_context(account), &secret)[..])
            .bind(now)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn totp<'a>(&'a self, account: &'a str) -> BoxFuture<'a, StoreResult<Option<TotpRecord>>> {
        async move {
            let row = sqlx::query(
                "SELECT secret, confirmed_at, last_step FROM account_totp WHERE account_id = $1",
            )
            .bind(account)
            .fetch_optional(&self.read)
            .await?;
            let Some(row) = row else { return Ok(None) };
            Ok(Some(TotpRecord {
                secret: self
                    .seal
                    .open(&totp_context(account), &row.bytes("secret")?)?,
                confirmed: row.opt_int("confirmed_at")?.is_some(),
                last_step: row.int("last_step")?,
            }))
        }
        .boxed()
    }

    fn complete_mfa(&self, done: MfaCompletion) -> BoxFuture<'_, StoreResult<MfaOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            match &done.proof {
                MfaProof::Nonce { id, expires_at } => {
                    if !Self::spend_nonce(&mut tx, id, *expires_at).await? {
                        return Ok(MfaOutcome::ChallengeUsed);
                    }
                }
                MfaProof::TotpStep { account, step } => {
                    let used = sqlx::query(
                        "UPDATE account_totp SET last_step = $1, \
                         confirmed_at = COALESCE(confirmed_at, $2) \
                         WHERE account_id = $3 AND last_step < $1",
                    )
                    .bind(*step)
                    .bind(done.now)
                    .bind(account.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if B::rows_affected(&used) != 1 {
                        return Ok(MfaOutcome::CodeUsed);
                    }
                }
            }
            let live = sqlx::query(
                "SELECT 1 AS live FROM sessions WHERE id = $1 AND revoked_at IS NULL \
                 AND expires_at > $2 AND last_used_at + idle_timeout > $2",
            )
            .bind(done.session_id.as_str())
            .bind(done.now)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Ok(MfaOutcome::SessionGone);
            }
            Self::raise_in(
                &mut tx,
                &done.session_id,
                &done.factor,
                done.aal2_until,
                done.now,
            )
            .await?;
            tx.commit().await?;
            Ok(MfaOutcome::Raised)
        }
        .boxed()
    }
}
