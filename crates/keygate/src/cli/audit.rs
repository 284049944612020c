//! `audit`: the audit trail (docs/audit.md), read and purged on the database
//! directly.

use clap::{Args, Subcommand};

use keygate::audit::to_json;
use keygate::store::audit::purge_audit;
use keygate::store::{AuditKind, AuditQuery};
use keygate::time::{Clock, SystemClock, UnixTime, format_rfc3339, parse_rfc3339};

use super::{CliResult, DbArgs, open_store};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    /// Only events since this long ago (`90s`, `15m`, `24h`, `7d`) or this
    /// time (RFC 3339, e.g. 2026-01-31T12:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Only events recorded with this account id.
    #[arg(long)]
    account: Option<String>,
    /// Only events of this key identity.
    #[arg(long)]
    identity: Option<String>,
    /// Only events of this kind (signin_failed, session_revoked, …).
    #[arg(long)]
    kind: Option<String>,
    /// At most this many events (newest first).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Delete the events recorded before a time or age (as --since takes).
    Purge {
        #[arg(long)]
        before: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `24h`-style ages and RFC 3339 times, as unix seconds at `now`.
fn parse_when(s: &str, now: UnixTime) -> Result<UnixTime, String> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    let unit = s.chars().last().ok_or("an empty time")?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => 0,
    };
    let n = s[..s.len() - unit.len_utf8()].parse::<i64>().ok();
    match n {
        Some(n) if scale > 0 && n >= 0 && n <= i64::MAX / scale => Ok(now - n * scale),
        _ => Err(
            "expected an age such as 90s, 15m, 24h, 7d or an RFC 3339 time such as \
             2026-01-31T12:00:00Z"
                .into(),
        ),
    }
}

pub(crate) async fn audit(a: AuditArgs) -> CliResult {
    let now = SystemClock.now();
    if let Some(AuditCommand::Purge { before, db }) = a.command {
        let before = parse_when(&before, now).map_err(|e| format!("--before: {e}"))?;
        let store = open_store(&db).await?;
        let n = purge_audit(
            store.as_ref(),
            before,
            keygate::store::PURGE_BATCH,
            u32::MAX,
            std::time::Duration::from_millis(20),
        )
        .await
        .map_err(|e| e.to_string())?;
        println!(
            "purged {n} audit event(s) before {}",
            format_rfc3339(before)
        );
        return Ok(());
    }
    let kind = match &a.kind {
        Some(k) => Some(k.parse::<AuditKind>().map_err(|()| {
            let names: Vec<&str> = AuditKind::ALL.iter().map(|k| k.as_str()).collect();
            format!("--kind must be one of: {}", names.join(", "))
        })?),
        None => None,
    };
    let since = match &a.since {
        Some(s) => Some(parse_when(s, now).map_err(|e| format!("--since: {e}"))?),
        None => None,
    };
    let q = AuditQuery {
        since,
        account: a.account,
        identity: a.identity,
        kind,
        limit: a.limit,
        ..AuditQuery::default()
    };
    let store = open_store(&a.db).await?;
    let rows = store.audit_events(&q).await.map_err(|e| e.to_string())?;
    for r in rows {
        if a.json {
            println!("{}", to_json(Some(r.id), &r.event));
            continue;
        }
        let e = r.event;
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{}\tapp={}\taccount={}\tidentity={}\tsession={}\tfrom={}\t{}",
            r.id,
            format_rfc3339(e.at),
            e.kind,
            e.outcome.as_deref().unwrap_or("ok"),
            dash(&e.app),
            dash(&e.account),
            dash(&e.identity),
            dash(&e.session),
            dash(&e.address),
            dash(&e.detail),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_when;

    #[test]
    fn ages_and_times() {
        assert_eq!(parse_when("90s", 1000), Ok(910));
        assert_eq!(parse_when("2h", 10_000), Ok(2_800));
        assert_eq!(parse_when("1d", 100_000), Ok(13_600));
        assert_eq!(parse_when("1970-01-01T00:01:00Z", 5), Ok(60));
        for bad in ["", "h", "5y", "-1d", "99999999999999999999d", "yesterday"] {
            assert!(parse_when(bad, 0).is_err(), "{bad}");
        }
    }
}
