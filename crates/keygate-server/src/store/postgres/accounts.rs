//! [`AccountStore`] on PostgreSQL: the SQL of `sqlite/accounts.rs` with `$n`
//! parameters (tables of migration 0002).

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Postgres, Row, Transaction};

use super::{PostgresStore, SESSION_COLUMNS, revoke_in, session_from_row};
use crate::store::accounts::*;
use crate::store::{Revoke, StoreResult};
use crate::time::UnixTime;

fn totp_context(account: &str) -> String {
    format!("account_totp:{account}")
}

/// Records a nonce as spent; false if it already was.
async fn spend_nonce(
    tx: &mut Transaction<'_, Postgres>,
    id: &[u8; 16],
    expires_at: UnixTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO used_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(&id[..])
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The account of a key, inside a transaction.
async fn account_in(
    tx: &mut Transaction<'_, Postgres>,
    identity: &str,
) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT account_id FROM account_keys WHERE identity = $1")
            .bind(identity)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

impl AccountStore for PostgresStore {
    fn sign_in_context<'a>(
        &'a self,
        identity: &'a str,
        api_key: &'a str,
    ) -> BoxFuture<'a, StoreResult<SignInContext>> {
        async move {
            let row = sqlx::query(
                "SELECT (SELECT account_id FROM account_keys WHERE identity = $1) AS account, \
                 COALESCE((SELECT required FROM api_key_mfa WHERE key_id = $2), 0) AS mfa",
            )
            .bind(identity)
            .bind(api_key)
            .fetch_one(&self.pool)
            .await?;
            Ok(SignInContext {
                account: row.try_get("account")?,
                mfa_required: row.try_get::<i64, _>("mfa")? != 0,
            })
        }
        .boxed()
    }

    fn create_account<'a>(
        &'a self,
        identity: &'a str,
        fresh: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<String>> {
        async move {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO account_keys (identity, account_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(identity)
            .bind(fresh)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let account = account_in(&mut tx, identity).await?;
            tx.commit().await?;
            account.ok_or_else(|| crate::store::StoreError::Internal("account row vanished".into()))
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
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let factor: Option<String> = row.try_get("factor")?;
            let until: Option<i64> = row.try_get("aal2_until")?;
            Ok(Some(SessionAuth {
                session: session_from_row(&row)?,
                account: row.try_get("acct")?,
                mfa_required: row.try_get::<i64, _>("mfa_required")? != 0,
                raised: factor.zip(until),
            }))
        }
        .boxed()
    }

    fn refresh_session_id(&self, hash: [u8; 32]) -> BoxFuture<'_, StoreResult<Option<String>>> {
        async move {
            Ok(
                sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE hash = $1")
                    .bind(&hash[..])
                    .fetch_optional(&self.pool)
                    .await?,
            )
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
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(AccountKey {
                        identity: r.try_get("identity")?,
                        label: r.try_get("label")?,
                        added_at: r.try_get("added_at")?,
                        last_used_at: r.try_get("last_used_at")?,
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn link_key(&self, link: LinkKey) -> BoxFuture<'_, StoreResult<LinkOutcome>> {
        async move {
            let mut tx = self.pool.begin().await?;
            if !spend_nonce(&mut tx, &link.nonce_id, link.nonce_expires_at).await? {
                return Ok(LinkOutcome::ChallengeUsed);
            }
            if account_in(&mut tx, &link.inviter).await?.as_deref() != Some(&link.account) {
                tx.commit().await?;
                return Ok(LinkOutcome::InviterGone);
            }
            let outcome = match account_in(&mut tx, &link.identity).await? {
                Some(a) if a == link.account => LinkOutcome::AlreadyLinked,
                Some(other) => {
                    let others: i64 = sqlx::query_scalar(
                        "SELECT (SELECT COUNT(*) FROM account_keys WHERE account_id = $1) + \
                         (SELECT COUNT(*) FROM account_totp WHERE account_id = $2 \
                          AND confirmed_at IS NOT NULL)",
                    )
                    .bind(&other)
                    .bind(&other)
                    .fetch_one(&mut *tx)
                    .await?;
                    if others > 1 {
                        LinkOutcome::InOtherAccount
                    } else {
                        sqlx::query("DELETE FROM account_totp WHERE account_id = $1")
                            .bind(&other)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM account_keys WHERE identity = $1")
                            .bind(&link.identity)
                            .execute(&mut *tx)
                            .await?;
                        let which = Revoke::AllOf {
                            subject: &link.identity,
                        };
                        revoke_in(&mut tx, &which, link.now).await?;
                        LinkOutcome::Linked
                    }
                }
                None => LinkOutcome::Linked,
            };
            if outcome == LinkOutcome::Linked {
                sqlx::query(
                    "INSERT INTO account_keys (identity, account_id, label, added_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&link.identity)
                .bind(&link.account)
                .bind(&link.label)
                .bind(link.now)
                .execute(&mut *tx)
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
            let mut tx = self.pool.begin().await?;
            if account_in(&mut tx, identity).await?.as_deref() != Some(account) {
                return Ok(RemoveKeyOutcome::NotFound);
            }
            let keys: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM account_keys WHERE account_id = $1")
                    .bind(account)
                    .fetch_one(&mut *tx)
                    .await?;
            if keys <= 1 {
                return Ok(RemoveKeyOutcome::LastKey);
            }
            sqlx::query("DELETE FROM account_keys WHERE identity = $1")
                .bind(identity)
                .execute(&mut *tx)
                .await?;
            let n = revoke_in(&mut tx, &Revoke::AllOf { subject: identity }, now).await?;
            tx.commit().await?;
            Ok(RemoveKeyOutcome::Removed(n))
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
            .execute(&self.pool)
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
            .bind(self.seal.seal(&totp_context(account), &secret))
            .bind(now)
            .execute(&self.pool)
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
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let sealed: Vec<u8> = row.try_get("secret")?;
            Ok(Some(TotpRecord {
                secret: self.seal.open(&totp_context(account), &sealed)?,
                confirmed: row.try_get::<Option<i64>, _>("confirmed_at")?.is_some(),
                last_step: row.try_get("last_step")?,
            }))
        }
        .boxed()
    }

    fn complete_mfa(&self, done: MfaCompletion) -> BoxFuture<'_, StoreResult<MfaOutcome>> {
        async move {
            let mut tx = self.pool.begin().await?;
            match &done.proof {
                MfaProof::Nonce { id, expires_at } => {
                    if !spend_nonce(&mut tx, id, *expires_at).await? {
                        return Ok(MfaOutcome::ChallengeUsed);
                    }
                }
                MfaProof::TotpStep { account, step } => {
                    let used = sqlx::query(
                        "UPDATE account_totp SET last_step = $1, \
                         confirmed_at = COALESCE(confirmed_at, $2) \
                         WHERE account_id = $3 AND last_step < $4",
                    )
                    .bind(step)
                    .bind(done.now)
                    .bind(account)
                    .bind(step)
                    .execute(&mut *tx)
                    .await?;
                    if used.rows_affected() != 1 {
                        return Ok(MfaOutcome::CodeUsed);
                    }
                }
            }
            let live = sqlx::query(
                "SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                 AND last_used_at + idle_timeout > $3",
            )
            .bind(&done.session_id)
            .bind(done.now)
            .bind(done.now)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Ok(MfaOutcome::SessionGone);
            }
            sqlx::query(
                "INSERT INTO session_mfa (session_id, factor, aal2_until, raised_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (session_id) DO UPDATE SET \
                 factor = excluded.factor, aal2_until = excluded.aal2_until, \
                 raised_at = excluded.raised_at",
            )
            .bind(&done.session_id)
            .bind(&done.factor)
            .bind(done.aal2_until)
            .bind(done.now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(MfaOutcome::Raised)
        }
        .boxed()
    }
}
