//! `clients`: the OpenID Provider's registered clients (docs/oidc.md),
//! administered on the database directly through [`keygate::admin`].

use clap::Subcommand;
use serde_json::json;

use keygate::admin::{self, AdminError, NewClient};
use keygate::entropy::os_rng;
use keygate::store::OAuthClientRecord;
use keygate::time::{SystemClock, format_rfc3339};

use super::{CliResult, DbArgs, open_store};

#[derive(Subcommand)]
pub(crate) enum ClientsCommand {
    /// Register an OIDC client; a confidential client's secret is printed once.
    Create {
        /// Shown to users on the consent screen (1 to 64 visible characters).
        #[arg(long)]
        name: String,
        /// Where the client may be sent back with a code (exact match); repeat
        /// for several. https, or http to 127.0.0.1, [::1] or localhost.
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
        /// Where the client may be sent after logout; repeat for several.
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// A public client (browser or native app): no secret; PKCE alone.
        #[arg(long)]
        public: bool,
        /// How its ID tokens are signed.
        #[arg(long, default_value = admin::CLIENT_ALGS[0], value_parser = admin::CLIENT_ALGS)]
        alg: String,
        /// Scopes it may ask for (space or comma separated), openid among them;
        /// without it "openid profile offline_access".
        #[arg(long)]
        scopes: Option<String>,
        /// A first-party client: users are not asked for consent.
        #[arg(long)]
        first_party: bool,
        /// The API key whose sessions and policy (TTLs, MFA, session cap) the
        /// client uses; without it a new key `oidc:<name>` is created.
        #[arg(long, value_name = "KEY_ID")]
        app: Option<String>,
        /// Print one JSON object instead of KEY=value lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List clients (never their secrets).
    List {
        /// Print a JSON array instead of one line per client.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a client and end every session it made.
    Revoke {
        client_id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub(crate) async fn clients(c: ClientsCommand) -> CliResult {
    match c {
        ClientsCommand::Create {
            name,
            redirect_uris,
            post_logout_redirect_uris,
            public,
            alg,
            scopes,
            first_party,
            app,
            json,
            db,
        } => {
            let spec = NewClient {
                name,
                redirect_uris,
                post_logout_redirect_uris,
                public,
                alg,
                scopes: scopes
                    .as_deref()
                    .map(admin::parse_scopes)
                    .unwrap_or_default(),
                first_party,
                app,
            };
            // Refused before the database is opened (or created).
            spec.check()
                .map_err(|e| refusal(e, "", spec.app.as_deref()))?;
            let store = open_store(&db).await?;
            let app = spec.app.clone();
            let created = admin::create_client(store.as_ref(), &SystemClock, &mut os_rng(), spec)
                .await
                .map_err(|e| refusal(e, "", app.as_deref()))?;
            let c = &created.record;
            if json {
                let out = json!({
                    "client_id": c.id,
                    "client_secret": created.secret,
                    "app": c.app,
                    "alg": c.alg,
                    "redirect_uris": c.redirect_uris,
                });
                println!("{out}");
            } else {
                println!("CLIENT_ID={}", c.id);
                if let Some(secret) = &created.secret {
                    println!("CLIENT_SECRET={secret}");
                }
                println!("APP={}", c.app);
            }
            if created.secret.is_some() {
                eprintln!("Client created. The secret is shown once: store it now.");
            } else {
                eprintln!("Public client created: it has no secret and must use PKCE.");
            }
            Ok(())
        }
        ClientsCommand::List { json, db } => {
            let store = open_store(&db).await?;
            let clients = admin::list_clients(store.as_ref())
                .await
                .map_err(|e| refusal(e, "", None))?;
            if json {
                let all: Vec<serde_json::Value> = clients.iter().map(client_json).collect();
                println!("{}", serde_json::Value::Array(all));
                return Ok(());
            }
            for c in clients {
                println!(
                    "{}\t{}\tapp={}\talg={}\t{}\tfirst_party={}\tscopes={}\tredirect_uris={}\t\
                     post_logout_redirect_uris={}\t{}\t{}",
                    c.id,
                    c.name,
                    c.app,
                    c.alg,
                    if c.secret_hash.is_some() {
                        "confidential"
                    } else {
                        "public"
                    },
                    c.first_party,
                    c.scopes.join(","),
                    c.redirect_uris.join(","),
                    c.post_logout_redirect_uris.join(","),
                    format_rfc3339(c.created_at),
                    c.revoked_at.map_or("active".to_owned(), |t| format!(
                        "revoked {}",
                        format_rfc3339(t)
                    )),
                );
            }
            Ok(())
        }
        ClientsCommand::Revoke { client_id, db } => {
            let store = open_store(&db).await?;
            admin::revoke_client(store.as_ref(), &SystemClock, &client_id)
                .await
                .map_err(|e| refusal(e, &client_id, None))?;
            println!("revoked {client_id} and every session it made");
            Ok(())
        }
    }
}

/// A client as `clients list --json` shows it (never its secret's hash).
fn client_json(c: &OAuthClientRecord) -> serde_json::Value {
    json!({
        "client_id": c.id,
        "name": c.name,
        "app": c.app,
        "alg": c.alg,
        "public": c.secret_hash.is_none(),
        "first_party": c.first_party,
        "scopes": c.scopes,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "created_at": c.created_at,
        "revoked_at": c.revoked_at,
    })
}

/// How the command words a refused operation on the client `id` (or with the
/// app `app`); the flag is named, the value never echoed back unless it is an id.
fn refusal(e: AdminError, id: &str, app: Option<&str>) -> String {
    match e {
        AdminError::InvalidClientName => "--name must be 1 to 64 visible characters".into(),
        AdminError::NoRedirectUri => "give at least one --redirect-uri".into(),
        AdminError::InvalidRedirectUri => format!("--redirect-uri: {e}"),
        AdminError::InvalidPostLogoutRedirectUri => format!("--post-logout-redirect-uri: {e}"),
        AdminError::InvalidAlg => format!("--alg: {e}"),
        AdminError::InvalidScope | AdminError::NoOpenidScope => format!("--scopes: {e}"),
        AdminError::NoLiveKey => format!("--app: no live API key {}", app.unwrap_or("")),
        AdminError::NoLiveClient => format!("no live client {id}"),
        e => e.to_string(),
    }
}
