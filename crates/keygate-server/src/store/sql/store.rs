//! [`Store`] on [`SqlStore`]: each statement of the trait, written once for both
//! databases.

use super::*;

impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    fn secret_or_insert(
        &self,
        name: &str,
        fresh: Vec<u8>,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<u8>>> {
        let name = name.to_owned();
        async move {
            let context = format!("server_secrets:{name}");
            sqlx::query(
                "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(name.as_str())
            .bind(&self.seal.seal(&context, &fresh)[..])
            .bind(now)
            .execute(&self.write)
            .await?;
            let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(&self.write)
                .await?;
            self.seal.open(&context, &row.bytes("value")?)
        }
        .boxed()
    }

    fn signing_keys(&self) -> BoxFuture<'_, StoreResult<Vec<SigningKeyRecord>>> {
        async move {
            let rows = sqlx::query(
                "SELECT kid, secret, created_at, retired_at FROM signing_keys \
                 ORDER BY created_at, kid",
            )
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|row| signing_key_from_row(row, &self.seal))
                .collect()
        }
        .boxed()
    }

    fn insert_signing_key(&self, key: SigningKeyRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut tx = self.write.begin().await?;
            Self::insert_signing_key_in(&mut tx, &self.seal, &key).await?;
            tx.commit().await?;
            Ok(())
        }
        .boxed()
    }

    fn rotate_signing_key(
        &self,
        key: SigningKeyRecord,
        retired_at: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        async move {
            let mut tx = self.write.begin().await?;
            // Concurrent rotations take turns: each retires the key the last added.
            if let Some(lock) = B::lock_exclusive("signing_keys") {
                sqlx::query(sqlx::AssertSqlSafe(lock))
                    .execute(&mut *tx)
                    .await?;
            }
            let rows = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid",
            )
            .bind(retired_at)
            .fetch_all(&mut *tx)
            .await?;
            let retired = rows
                .iter()
                .map(|r| r.text("kid"))
                .collect::<Result<Vec<_>, _>>()?;
            Self::insert_signing_key_in(&mut tx, &self.seal, &key).await?;
            tx.commit().await?;
            Ok(retired)
        }
        .boxed()
    }

    fn insert_api_key(&self, key: ApiKeyRecord) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO api_keys (id, name, secret, scopes, can_broker, access_ttl, \
                 session_ttl, idle_timeout, created_at, revoked_at, origins, introspect_any, \
                 max_sessions, dev, dpop) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(key.id.as_str())
            .bind(key.name.as_str())
            .bind(
                &self
                    .seal
                    .seal(&format!("api_keys:{}", key.id), &key.secret.as_bytes()[..])[..],
            )
            .bind(key.scopes.join(" ").as_str())
            .bind(i64::from(key.can_broker))
            .bind(key.policy.access_ttl)
            .bind(key.policy.session_ttl)
            .bind(key.policy.idle_timeout)
            .bind(key.created_at)
            .bind(key.revoked_at)
            .bind(key.origins.join(" ").as_str())
            .bind(i64::from(key.introspect_any))
            .bind(i64::from(key.max_sessions))
            .bind(i64::from(key.dev))
            .bind(key.dpop.as_str())
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn api_key(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<ApiKeyRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.read)
                .await?;
            match row {
                Some(r) => api_key_from_row(&r, &self.seal).map(Some),
                // As much work as a key found: its secret would have been unsealed.
                None => {
                    self.seal.open_dummy();
                    Ok(None)
                }
            }
        }
        .boxed()
    }

    fn api_keys(&self) -> BoxFuture<'_, StoreResult<Vec<ApiKeyRecord>>> {
        async move {
            let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
                .fetch_all(&self.read)
                .await?;
            rows.iter()
                .map(|r| api_key_from_row(r, &self.seal))
                .collect()
        }
        .boxed()
    }

    fn set_api_key_origins<'a>(
        &'a self,
        id: &'a str,
        origins: &'a [String],
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let done = sqlx::query("UPDATE api_keys SET origins = $1 WHERE id = $2")
                .bind(origins.join(" ").as_str())
                .bind(id)
                .execute(&self.write)
                .await?;
            Ok(B::rows_affected(&done) == 1)
        }
        .boxed()
    }

    fn longest_access_ttl(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        async move {
            let row = sqlx::query("SELECT MAX(access_ttl) AS ttl FROM api_keys")
                .fetch_one(&self.read)
                .await?;
            Ok(row.opt_int("ttl")?)
        }
        .boxed()
    }

    fn revoke_api_key(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        async move {
            let mut tx = self.write.begin().await?;
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            let n = Self::revoke_in(&mut tx, &Revoke::ApiKey { id: &id }, now).await?;
            tx.commit().await?;
            crate::metrics::metrics().sessions_revoked(n);
            Ok(B::rows_affected(&done) == 1)
        }
        .boxed()
    }

    fn redeem(&self, redemption: Redemption) -> BoxFuture<'_, StoreResult<RedeemOutcome>> {
        async move {
            let (reply, rx) = oneshot::channel();
            let gone = || StoreError::Unavailable("store is shutting down".into());
            self.jobs
                .send(Job { redemption, reply })
                .await
                .map_err(|_| gone())?;
            rx.await.map_err(|_| gone())?
        }
        .boxed()
    }

    fn session(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<SessionRecord>>> {
        let id = id.to_owned();
        async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
            )))
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await?;
            Ok(row.as_ref().map(session_from_row).transpose()?)
        }
        .boxed()
    }

    fn sessions_of(&self, subject: &str) -> BoxFuture<'_, StoreResult<Vec<SessionRecord>>> {
        let subject = subject.to_owned();
        async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject = $1 \
                 ORDER BY created_at DESC, id"
            )))
            .bind(subject.as_str())
            .fetch_all(&self.read)
            .await?;
            Ok(rows
                .iter()
                .map(session_from_row)
                .collect::<Result<_, _>>()?)
        }
        .boxed()
    }

    fn touch_session(&self, id: &str, now: UnixTime) -> BoxFuture<'_, StoreResult<()>> {
        let id = id.to_owned();
        async move {
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id.as_str())
                .execute(&self.write)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn revoke_sessions<'a>(
        &'a self,
        which: Revoke<'a>,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let mut tx = self.write.begin().await?;
            let n = Self::revoke_in(&mut tx, &which, now).await?;
            tx.commit().await?;
            crate::metrics::metrics().sessions_revoked(n);
            Ok(n)
        }
        .boxed()
    }

    fn rotate_refresh_token<'a>(
        &'a self,
        old: [u8; 32],
        client_id: &'a str,
        new: [u8; 32],
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<RefreshOutcome>> {
        async move {
            let mut tx = self.write.begin().await?;
            // The row lock makes concurrent rotations of one token, on any node,
            // take turns: the second sees it spent.
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT session_id, client_id, spent_at FROM refresh_tokens WHERE hash = $1{}",
                B::FOR_UPDATE
            )))
            .bind(&old[..])
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(RefreshOutcome::Invalid);
            };
            let session_id = row.text("session_id")?;
            let bound_to = row.text("client_id")?;
            let spent_at = row.opt_int("spent_at")?;
            if bound_to != client_id {
                return Ok(RefreshOutcome::Invalid);
            }
            let session = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1{}",
                B::FOR_UPDATE
            )))
            .bind(session_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = session.as_ref().map(session_from_row).transpose()? else {
                return Ok(RefreshOutcome::Invalid);
            };
            if spent_at.is_some() {
                let which = Revoke::One {
                    subject: &session.subject,
                    id: &session.id,
                };
                let n = Self::revoke_in(&mut tx, &which, now).await?;
                tx.commit().await?;
                crate::metrics::metrics().refresh_reused();
                crate::metrics::metrics().sessions_revoked(n);
                return Ok(RefreshOutcome::Reused);
            }
            match session.check(now) {
                Err(crate::Error::SessionRevoked) => return Ok(RefreshOutcome::Revoked),
                Err(_) => return Ok(RefreshOutcome::Expired),
                Ok(()) => {}
            }
            sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE hash = $2")
                .bind(now)
                .bind(&old[..])
                .execute(&mut *tx)
                .await?;
            Self::insert_refresh(&mut tx, &new, &session.id, client_id, now).await?;
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(session.id.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            crate::metrics::metrics().session_refreshed();
            Ok(RefreshOutcome::Rotated(Box::new(SessionRecord {
                last_used_at: now,
                ..session
            })))
        }
        .boxed()
    }

    fn insert_broker_token(&self, g: BrokerGrant) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            sqlx::query(
                "INSERT INTO broker_tokens (hash, api_key, endpoint_id, role, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&g.hash[..])
            .bind(g.api_key.as_str())
            .bind(g.endpoint_id.as_str())
            .bind(g.role.as_str())
            .bind(g.expires_at)
            .execute(&self.write)
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn exchange_broker_token(
        &self,
        hash: [u8; 32],
        session: NewSession,
        now: UnixTime,
    ) -> BoxFuture<'_, StoreResult<Option<(SessionRecord, String)>>> {
        async move {
            let mut tx = self.write.begin().await?;
            let Some(grant) = sqlx::query(
                "UPDATE broker_tokens SET used_at = $1 \
                 WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = broker_tokens.api_key \
                             AND k.revoked_at IS NULL AND k.can_broker != 0) \
                 RETURNING api_key, endpoint_id, role",
            )
            .bind(now)
            .bind(&hash[..])
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            let api_key = grant.text("api_key")?;
            let endpoint_id = grant.text("endpoint_id")?;
            let role = grant.text("role")?;
            // FOR SHARE: a revocation of the key waits for this session to exist.
            let policy = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT session_ttl, idle_timeout FROM api_keys WHERE id = $1 \
                 AND revoked_at IS NULL{}",
                B::FOR_SHARE
            )))
            .bind(api_key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(policy) = policy else {
                return Ok(None);
            };
            let record = brokered_session(
                session,
                api_key,
                &endpoint_id,
                policy.int("session_ttl")?,
                policy.int("idle_timeout")?,
                now,
            );
            sqlx::query(
                "INSERT INTO sessions (id, subject, api_key, client_id, scope, created_at, \
                 last_used_at, expires_at, idle_timeout, user_agent, address) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10)",
            )
            .bind(record.id.as_str())
            .bind(record.subject.as_str())
            .bind(record.api_key.as_str())
            .bind(record.client_id.as_deref())
            .bind(record.scope.as_str())
            .bind(now)
            .bind(record.expires_at)
            .bind(record.idle_timeout)
            .bind(record.user_agent.as_deref())
            .bind(record.address.as_deref())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((record, role)))
        }
        .boxed()
    }

    fn revocation_cursor(&self) -> BoxFuture<'_, StoreResult<i64>> {
        async move {
            let row =
                sqlx::query("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) AS seq FROM revocations")
                    .fetch_one(&self.read)
                    .await?;
            Ok(row.int("seq")?)
        }
        .boxed()
    }

    fn revocations_since(
        &self,
        since: i64,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<RevocationEvent>>> {
        async move {
            let rows = sqlx::query(
                "SELECT seq, session_id, revoked_at, expires_at FROM revocations \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
            rows.iter().map(revocation_from_row).collect()
        }
        .boxed()
    }

    fn live_session_count<'a>(
        &'a self,
        subject: &'a str,
        api_key: &'a str,
        now: UnixTime,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM sessions WHERE subject = $1 AND api_key = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 AND last_used_at + idle_timeout > $3",
            )
            .bind(subject)
            .bind(api_key)
            .bind(now)
            .fetch_one(&self.read)
            .await?;
            Ok(row.int("n")?.max(0) as u64)
        }
        .boxed()
    }

    fn purge_expired(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<Purged>> {
        async move {
            let limit = i64::from(limit);
            let mut tx = self.write.begin().await?;
            // Nonces, feed entries, brokered token ids, authorization codes and
            // device grants: by their own expiry.
            // Spent nonces by their whole key, which on SQLite is (expires_at,
            // nonce): a range delete at the start of its index.
            let mut expired = [0u64; 5];
            for (n, (table, key)) in expired.iter_mut().zip([
                ("used_nonces", "expires_at, nonce"),
                ("revocations", "seq"),
                ("broker_tokens", "hash"),
                ("oauth_codes", "hash"),
                ("oauth_devices", "device_hash"),
            ]) {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} \
                     WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)"
                )))
                .bind(before)
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                *n = B::rows_affected(&done);
            }
            let [
                nonces,
                revocations,
                broker_tokens,
                oauth_codes,
                oauth_devices,
            ] = expired;
            let (sessions, refresh_tokens) = B::purge_sessions(&mut tx, before, limit).await?;
            tx.commit().await?;
            Ok(Purged {
                nonces,
                sessions,
                refresh_tokens,
                revocations,
                broker_tokens,
                oauth_codes,
                oauth_devices,
            })
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        async move {
            self.read.close().await;
            self.write.close().await;
        }
        .boxed()
    }
}
