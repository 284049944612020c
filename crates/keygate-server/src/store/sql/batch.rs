//! The group commit: sign-ins waiting to be redeemed are taken in batches, and
//! each batch is one transaction of a few bulk statements (the nonces, the app
//! keys' state, the accounts, the sessions, the caps, the audit events), so N
//! concurrent sign-ins cost one commit and one sync, not N.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{Encode, Executor, Pool, Transaction, Type};
use tokio::sync::{Semaphore, mpsc};

use super::{Backend, Job, MAX_BATCH, SqlStore, chunks, values_sql};
use crate::account::RECOVERY_LABEL;
use crate::store::rows::{Columns, SESSION_COLUMNS, session_from_row};
use crate::store::{AuditEvent, RedeemOutcome, Redemption, SignedIn, StoreError, StoreResult};

impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    /// Takes up to [`MAX_BATCH`] waiting sign-ins at a time and commits each
    /// batch on its own task, at most [`Backend::COMMITTERS`] at once: while all
    /// are busy, arrivals wait and form the next, larger batch. After a batch's
    /// replies it runs [`Backend::FINISH_CHECKPOINT`] when `wal_due` asks.
    pub(super) async fn group_committer(
        pool: Pool<B>,
        mut rx: mpsc::Receiver<Job>,
        wal_due: Arc<AtomicBool>,
    ) {
        let slots = Arc::new(Semaphore::new(B::COMMITTERS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            let pool = pool.clone();
            let wal_due = wal_due.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = Self::commit_batch(&pool, &batch).await;
                if result.is_ok() {
                    crate::metrics::metrics().group_commit(batch.len(), started.elapsed());
                }
                match result {
                    Ok(outcomes) => {
                        for (job, outcome) in batch.into_iter().zip(outcomes) {
                            let _ = job.reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        for job in batch {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                    }
                }
                if let Some(sql) = B::FINISH_CHECKPOINT
                    && wal_due.swap(false, Ordering::AcqRel)
                    && let Err(e) = sqlx::query(sql).execute(&pool).await
                {
                    tracing::debug!(error = %e, "checkpoint not finished");
                }
                drop(slot);
            });
        }
    }

    /// Commits a batch of redemptions in one transaction, with a few bulk
    /// statements rather than two statements per sign-in. Outcomes are those of
    /// running the jobs one by one in order (the first of two jobs with one nonce
    /// wins).
    pub(super) async fn commit_batch(
        pool: &Pool<B>,
        batch: &[Job],
    ) -> StoreResult<Vec<RedeemOutcome>> {
        let mut tx = pool.begin().await?;
        // 1. Spend the nonces, in sorted order so that two batches sharing nonces
        //    take their row locks in the same order (no deadlock). A nonce
        //    repeated inside the batch is used from its second job on.
        let mut seen = HashSet::with_capacity(batch.len());
        let mut fresh: Vec<&Redemption> = batch
            .iter()
            .map(|j| &j.redemption)
            .filter(|r| seen.insert(r.nonce_id))
            .collect();
        fresh.sort_by_key(|r| r.nonce_id);
        let mut spent_now: HashSet<[u8; 16]> = HashSet::with_capacity(fresh.len());
        for row in B::spend_nonces(&mut tx, &fresh).await? {
            if let Ok(n) = <[u8; 16]>::try_from(row.bytes("nonce")?.as_slice()) {
                spent_now.insert(n);
            }
        }
        // 2. Which app keys involved are live, and whether they ask for a second
        //    factor, in sorted order. FOR SHARE holds a revocation of the key (an
        //    UPDATE of its row) until this batch has committed, so that the
        //    revocation then sees, and revokes, the sessions made here (on SQLite
        //    the write lock taken above does).
        let mut keys: Vec<&str> = batch
            .iter()
            .filter(|j| j.redemption.renew.is_none())
            .map(|j| j.redemption.session.api_key.as_str())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut live: HashMap<&str, bool> = HashMap::with_capacity(keys.len());
        let sql = format!(
            "SELECT COALESCE((SELECT required FROM api_key_mfa WHERE key_id = $1), 0) AS mfa \
             FROM api_keys WHERE id = $1 AND revoked_at IS NULL{}",
            B::FOR_SHARE
        );
        for key in keys {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                live.insert(key, row.int("mfa")? != 0);
            }
        }
        // 3. The account of every key signing in; a key's first sign-in creates
        //    its own, here rather than in a transaction of its own.
        let signing: Vec<&Redemption> = batch
            .iter()
            .map(|j| &j.redemption)
            .filter(|r| spent_now.contains(&r.nonce_id))
            .collect();
        let accounts = Self::accounts_of(&mut tx, &signing).await?;
        // 4. Each job's outcome; renewals run here, new sessions are collected.
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut created: Vec<&Redemption> = Vec::with_capacity(batch.len());
        for job in batch {
            let r = &job.redemption;
            if !spent_now.remove(&r.nonce_id) {
                outcomes.push(RedeemOutcome::ChallengeUsed);
                continue;
            }
            let s = &r.session;
            let Some((account, recovery)) = accounts.get(s.subject.as_str()) else {
                return Err(StoreError::Internal("account row vanished".into()));
            };
            if *recovery {
                outcomes.push(RedeemOutcome::RecoveryKey);
                continue;
            }
            if let Some(sid) = &r.renew {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE sessions SET last_used_at = $1 WHERE id = $2 AND subject = $3 \
                     AND api_key = $4 AND revoked_at IS NULL AND expires_at > $1 \
                     AND last_used_at + idle_timeout > $1 RETURNING {SESSION_COLUMNS}"
                )))
                .bind(s.created_at)
                .bind(sid.as_str())
                .bind(s.subject.as_str())
                .bind(s.api_key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                outcomes.push(match row {
                    Some(row) => RedeemOutcome::Renewed {
                        session: Box::new(session_from_row(&row)?),
                        account: account.clone(),
                    },
                    None => RedeemOutcome::SessionGone,
                });
                continue;
            }
            let Some(&mfa_required) = live.get(s.api_key.as_str()) else {
                outcomes.push(RedeemOutcome::ApiKeyRevoked);
                continue;
            };
            created.push(r);
            outcomes.push(RedeemOutcome::Created(SignedIn {
                account: account.clone(),
                mfa_required,
                capped: 0,
            }));
        }
        // 5. The new sessions, then their refresh tokens.
        if !created.is_empty() {
            B::insert_sessions(&mut tx, &created).await?;
        }
        // 6. The per-key session caps: they may take the feed's lock (after it,
        //    only appends to the audit table, which wait for no row).
        let mut capped = Self::cap_sessions_in(&mut tx, &created).await?;
        let ended: u64 = capped.values().sum();
        // 7. The audit events of the sign-ins that succeeded, each after its
        //    cap's. A cap is told to the first sign-in of its identity and app.
        let mut events = Vec::new();
        for (job, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            let r = &job.redemption;
            let s = &r.session;
            let account = match outcome {
                RedeemOutcome::Created(signed) => {
                    if let Some(n) = capped.remove(&(s.subject.as_str(), s.api_key.as_str())) {
                        signed.capped = n;
                        if r.event.is_some() {
                            events.push(AuditEvent::cap(s.created_at, &s.api_key, &s.subject));
                        }
                    }
                    &signed.account
                }
                RedeemOutcome::Renewed { account, .. } => account,
                _ => continue,
            };
            if let Some(event) = &r.event {
                let mut event = event.clone();
                event.account = Some(account.clone());
                events.push(event);
            }
        }
        Self::insert_audit(&mut tx, &events).await?;
        tx.commit().await?;
        if ended > 0 {
            crate::metrics::metrics().sessions_revoked(ended);
        }
        Ok(outcomes)
    }

    /// The account of each subject signing in, and whether that key is its
    /// account's recovery key. A key with no account gets the one its
    /// redemption drew (`new_account`), as its only key; where another
    /// transaction added the key first, its row wins and is read back.
    async fn accounts_of(
        tx: &mut Transaction<'_, B>,
        signing: &[&Redemption],
    ) -> StoreResult<HashMap<String, (String, bool)>> {
        let mut subjects: Vec<&str> = signing.iter().map(|r| r.session.subject.as_str()).collect();
        subjects.sort_unstable();
        subjects.dedup();
        let mut found = HashMap::with_capacity(subjects.len());
        Self::read_accounts(tx, &subjects, &mut found).await?;
        if found.len() == subjects.len() {
            return Ok(found);
        }
        // First sign-ins, in sorted order (concurrent batches insert in the same
        // order: no deadlock).
        let mut first: Vec<&Redemption> = signing
            .iter()
            .copied()
            .filter(|r| !found.contains_key(r.session.subject.as_str()))
            .collect();
        first.sort_by(|a, b| a.session.subject.cmp(&b.session.subject));
        first.dedup_by(|a, b| a.session.subject == b.session.subject);
        for chunk in chunks(&first) {
            let sql = values_sql::<B>(
                "INSERT INTO account_keys (identity, account_id, added_at)",
                3,
                chunk.len(),
                " ON CONFLICT DO NOTHING",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.session.subject.as_str())
                    .bind(r.new_account.as_str())
                    .bind(r.session.created_at);
            }
            q.execute(&mut **tx).await?;
        }
        let missing: Vec<&str> = first.iter().map(|r| r.session.subject.as_str()).collect();
        Self::read_accounts(tx, &missing, &mut found).await?;
        Ok(found)
    }

    /// Adds to `found` the account and recovery flag of each of `identities`
    /// that has an account.
    async fn read_accounts(
        tx: &mut Transaction<'_, B>,
        identities: &[&str],
        found: &mut HashMap<String, (String, bool)>,
    ) -> StoreResult<()> {
        for chunk in chunks(identities) {
            let sql = values_sql::<B>(
                "SELECT identity, account_id, label FROM account_keys WHERE identity IN (",
                1,
                chunk.len(),
                ")",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for identity in chunk {
                q = q.bind(*identity);
            }
            for row in q.fetch_all(&mut **tx).await? {
                let recovery = row.opt_text("label")?.as_deref() == Some(RECOVERY_LABEL);
                found.insert(row.text("identity")?, (row.text("account_id")?, recovery));
            }
        }
        Ok(())
    }

    /// Ends the oldest live sessions of each identity and app among `created`
    /// beyond its cap ([`Redemption::keep`]), with their feed entries; returns
    /// how many ended per identity and app. Two statements for the whole batch,
    /// whatever its size: one walk of the covering index `sessions_subject_app`
    /// (newest first) per identity picks the sessions beyond each cap, and one
    /// update ends them.
    async fn cap_sessions_in<'r>(
        tx: &mut Transaction<'_, B>,
        created: &[&'r Redemption],
    ) -> StoreResult<HashMap<(&'r str, &'r str), u64>> {
        // (app, identity, cap) once each: the smallest cap if a batch has two.
        let mut pairs: Vec<(&'r str, &'r str, u32)> = created
            .iter()
            .filter_map(|r| {
                let s = &r.session;
                r.keep
                    .map(|k| (s.api_key.as_str(), s.subject.as_str(), k.max(1)))
            })
            .collect();
        let mut ended = HashMap::new();
        if pairs.is_empty() {
            return Ok(ended);
        }
        pairs.sort_unstable();
        pairs.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
        let now = created
            .iter()
            .map(|r| r.session.created_at)
            .max()
            .unwrap_or_default();
        // 1. Each identity's live sessions beyond the newest `keep`: one walk of
        //    the covering index per identity, newest first, skipping `keep`
        //    (no table row is read and nothing is sorted), all of a chunk's
        //    identities in one statement. An identity under its cap costs the
        //    walk of its few index entries.
        pairs.sort_unstable_by_key(|p| (p.0, p.2, p.1));
        let mut ids: Vec<String> = Vec::new();
        for group in pairs.chunk_by(|a, b| (a.0, a.2) == (b.0, b.2)) {
            for chunk in chunks(group) {
                let n = chunk.len();
                let sql = (1..=n)
                    .map(|i| {
                        format!(
                            "SELECT id FROM (SELECT id FROM sessions WHERE subject = ${i} \
                             AND api_key = ${a} AND revoked_at IS NULL AND expires_at > ${t} \
                             AND last_used_at + idle_timeout > ${t} \
                             ORDER BY created_at DESC, id DESC {skip} {keep}) AS c{i}",
                            a = n + 1,
                            t = n + 2,
                            skip = B::ALL_AFTER,
                            keep = group[0].2,
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for p in chunk {
                    q = q.bind(p.1);
                }
                for row in q.bind(group[0].0).bind(now).fetch_all(&mut **tx).await? {
                    ids.push(row.text("id")?);
                }
            }
        }
        if ids.is_empty() {
            return Ok(ended);
        }
        pairs.sort_unstable();
        // 2. Ended in id order (on PostgreSQL, the order their row locks are
        //    taken in by every batch: no deadlock), then their feed entries.
        ids.sort_unstable();
        ids.dedup();
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in chunks(&ids) {
            let n = chunk.len();
            let sql = values_sql::<B>(
                &format!(
                    "UPDATE sessions SET revoked_at = ${} WHERE revoked_at IS NULL AND id IN (",
                    n + 1
                ),
                1,
                n,
                ") RETURNING id, subject, api_key, expires_at",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.bind(now).fetch_all(&mut **tx).await? {
                let (subject, app) = (row.text("subject")?, row.text("api_key")?);
                if let Ok(i) =
                    pairs.binary_search_by(|p| (p.0, p.1).cmp(&(app.as_str(), subject.as_str())))
                {
                    *ended.entry((pairs[i].1, pairs[i].0)).or_insert(0) += 1;
                }
                rows.push((row.text("id")?, row.int("expires_at")?));
            }
        }
        Self::append_feed(tx, &rows, now).await?;
        Ok(ended)
    }
}
