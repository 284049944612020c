//! `sessions`: users' sessions, administered on the database directly.

use clap::Subcommand;

use keygate::admin;
use keygate::identity::Identity;
use keygate::time::{SystemClock, format_rfc3339};

use super::{CliResult, DbArgs, open_store};

#[derive(Subcommand)]
pub(crate) enum SessionsCommand {
    /// List an identity's sessions.
    List {
        #[arg(long)]
        identity: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke one session (--session) or all of an identity's sessions.
    Revoke {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub(crate) async fn sessions(s: SessionsCommand) -> CliResult {
    match s {
        SessionsCommand::List { identity, db } => {
            let identity = Identity::parse(&identity).map_err(|e| e.to_string())?;
            let store = open_store(&db).await?;
            let listed = admin::sessions_of(store.as_ref(), &SystemClock, &identity)
                .await
                .map_err(|e| e.to_string())?;
            for admin::SessionView { session: s, ended } in listed {
                let state = match ended {
                    None => "active".to_owned(),
                    Some(e) => e.code().to_owned(),
                };
                println!(
                    "{}\t{}\tcreated {}\texpires {}\t{}\t{}",
                    s.id,
                    s.api_key,
                    format_rfc3339(s.created_at),
                    format_rfc3339(s.expires_at),
                    s.client_id.as_deref().unwrap_or("-"),
                    state
                );
            }
            Ok(())
        }
        SessionsCommand::Revoke {
            identity,
            session,
            db,
        } => {
            let identity = Identity::parse(&identity).map_err(|e| e.to_string())?;
            let store = open_store(&db).await?;
            let n =
                admin::revoke_sessions(store.as_ref(), &SystemClock, &identity, session.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
            println!("revoked {n} session(s)");
            Ok(())
        }
    }
}
