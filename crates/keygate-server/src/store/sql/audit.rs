//! [`AuditStore`] on the SQL store (table `audit_events`), for either database.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::{Encode, Executor, Type};

use super::{Backend, SqlStore};
use crate::store::audit::*;
use crate::store::rows::Columns;
use crate::store::{StoreError, StoreResult};
use crate::time::UnixTime;

const COLUMNS: &str =
    "id, at, kind, outcome, app, account_id, identity, session_id, address, user_agent, detail";

fn audit_from_row(row: &impl Columns) -> StoreResult<AuditRecord> {
    let kind = row.text("kind")?;
    Ok(AuditRecord {
        id: row.int("id")?,
        event: AuditEvent {
            at: row.int("at")?,
            kind: kind
                .parse()
                .map_err(|()| StoreError::Internal("an audit event of unknown kind".into()))?,
            outcome: row.opt_text("outcome")?,
            app: row.opt_text("app")?,
            account: row.opt_text("account_id")?,
            identity: row.opt_text("identity")?,
            session: row.opt_text("session_id")?,
            address: row.opt_text("address")?,
            user_agent: row.opt_text("user_agent")?,
            detail: row.opt_text("detail")?,
        },
    })
}

enum Bind<'a> {
    Text(&'a str),
    Int(i64),
}

// The bounds of `SqlStore`'s impl blocks in `sql.rs`; see there.
impl<B: Backend> AuditStore for SqlStore<B>
where
    for<'c> &'c mut B::Connection: Executor<'c, Database = B>,
    for<'q> i64: Encode<'q, B> + Type<B>,
    for<'q> Option<i64>: Encode<'q, B> + Type<B>,
    for<'q> &'q str: Encode<'q, B> + Type<B>,
    for<'q> Option<&'q str>: Encode<'q, B> + Type<B>,
    for<'q> &'q [u8]: Encode<'q, B> + Type<B>,
{
    fn append_audit<'a>(&'a self, events: &'a [AuditEvent]) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            if events.is_empty() {
                return Ok(());
            }
            let mut tx = self.write.begin().await?;
            Self::insert_audit(&mut tx, events).await?;
            tx.commit().await?;
            Ok(())
        }
        .boxed()
    }

    fn audit_events<'a>(
        &'a self,
        q: &'a AuditQuery,
    ) -> BoxFuture<'a, StoreResult<Vec<AuditRecord>>> {
        async move {
            let mut binds: Vec<Bind<'_>> = Vec::new();
            let mut conds: Vec<String> = Vec::new();
            let mut cond = |binds: &mut Vec<Bind<'a>>, bind: Bind<'a>, sql: &str| {
                binds.push(bind);
                conds.push(sql.replace('?', &format!("${}", binds.len())));
            };
            if let Some(since) = q.since {
                cond(&mut binds, Bind::Int(since), "at >= ?");
            }
            if let Some(a) = &q.account {
                cond(&mut binds, Bind::Text(a), "account_id = ?");
            }
            if let Some(i) = &q.identity {
                cond(&mut binds, Bind::Text(i), "identity = ?");
            }
            if let Some(a) = &q.visible_to {
                cond(
                    &mut binds,
                    Bind::Text(a),
                    "(account_id = ? OR (account_id IS NULL AND identity IN \
                     (SELECT identity FROM account_keys WHERE account_id = ?)))",
                );
            }
            if let Some(k) = q.kind {
                cond(&mut binds, Bind::Text(k.as_str()), "kind = ?");
            }
            if let Some(b) = q.before {
                cond(&mut binds, Bind::Int(b), "id < ?");
            }
            binds.push(Bind::Int(i64::from(q.limit)));
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_events{filter} ORDER BY id DESC LIMIT ${}",
                binds.len()
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in binds {
                query = match b {
                    Bind::Text(t) => query.bind(t),
                    Bind::Int(i) => query.bind(i),
                };
            }
            let rows = query.fetch_all(&self.read).await?;
            rows.iter().map(audit_from_row).collect()
        }
        .boxed()
    }

    fn purge_audit(&self, before: UnixTime, limit: u32) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
                 WHERE at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.write)
            .await?;
            Ok(B::rows_affected(&done))
        }
        .boxed()
    }
}
