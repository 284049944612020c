//! `keys`: apps' API keys and the token-signing keys, administered on the
//! database directly through [`keygate::admin`].

use clap::Subcommand;

use keygate::admin::{self, AdminError, KeySpec, MfaPolicy};
use keygate::entropy::{OsEntropy, os_rng};
use keygate::session::SessionPolicy;
use keygate::time::{Clock, SystemClock, format_rfc3339};

use super::{CliResult, DbArgs, open_store};

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Scopes tokens made through this key may carry (space or comma separated).
        #[arg(long, default_value = "")]
        scopes: String,
        /// Allow this key to create brokered tokens.
        #[arg(long)]
        broker: bool,
        #[arg(long, default_value_t = keygate::session::DEFAULT_ACCESS_TTL)]
        access_ttl: i64,
        #[arg(long, default_value_t = keygate::session::DEFAULT_SESSION_TTL)]
        session_ttl: i64,
        #[arg(long, default_value_t = keygate::session::DEFAULT_IDLE_TIMEOUT)]
        idle_timeout: i64,
        /// Second factor: `required` makes every sign-in `mfa_pending` until the
        /// user shows another key of their account or a TOTP code (docs/accounts.md).
        #[arg(long, default_value = "off", value_parser = ["off", "required"])]
        mfa: String,
        /// An origin of this app (e.g. `https://app.example`) that its challenges
        /// may name as their audience besides the key id; repeat for several
        /// (docs/tenancy.md).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// Allow this key to introspect tokens issued to other apps (a shared
        /// resource server); without it they are `active: false`.
        #[arg(long)]
        introspect_any: bool,
        /// Live sessions one identity may hold with this app; a sign-in past it
        /// ends the oldest (docs/lifecycle.md).
        #[arg(long, default_value_t = keygate::store::DEFAULT_MAX_SESSIONS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(admin::MAX_SESSIONS_LIMIT)))]
        max_sessions: u32,
        /// A development key: it may mint a token for any identity without a
        /// signature (`POST /v1/dev/token`), and works only on a Hub started with
        /// `--dev`; its tokens say `acr` `dev` (docs/dev-mode.md).
        #[arg(long)]
        dev: bool,
        /// Key-bound tokens (DPoP, docs/dpop.md): `optional` binds the tokens of
        /// sign-ins that bring a proof made with the user's key, `required` refuses
        /// sign-ins without one, `off` ignores proofs (bearer tokens only).
        #[arg(long, default_value = "optional", value_parser = ["off", "optional", "required"])]
        dpop: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Replace an API key's origins (the audiences its challenges may name
    /// besides the key id); none given leaves only the key id.
    Origins {
        id: String,
        #[arg(long = "origin")]
        origins: Vec<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set an API key's MFA policy (takes effect at once, live sessions included).
    Mfa {
        id: String,
        #[arg(value_parser = ["off", "required"])]
        policy: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List API keys (never their secrets).
    List(DbArgs),
    /// Revoke an API key and every session made through it.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Add a new token-signing key and retire the current one: new tokens are
    /// signed with the new key at once (running servers reload within a second);
    /// the retired key stays in the JWKS until the tokens it signed have expired.
    RotateSigning {
        /// The old key leaked: drop it from the JWKS at once, so that the tokens it
        /// signed (and any forged with it) stop verifying.
        #[arg(long)]
        drop_old: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub(crate) async fn keys(k: KeysCommand) -> CliResult {
    match k {
        KeysCommand::Create {
            name,
            scopes,
            broker,
            access_ttl,
            session_ttl,
            idle_timeout,
            mfa,
            origins,
            introspect_any,
            max_sessions,
            dev,
            dpop,
            db,
        } => {
            admin::check_origins(&origins).map_err(|e| refusal(e, ""))?;
            let store = open_store(&db).await?;
            let spec = KeySpec {
                name,
                scopes: admin::parse_scopes(&scopes),
                can_broker: broker,
                policy: SessionPolicy {
                    access_ttl,
                    session_ttl,
                    idle_timeout,
                },
                mfa: mfa_policy(&mfa)?,
                origins,
                introspect_any,
                max_sessions,
                dev,
                dpop: dpop.parse().unwrap_or_default(),
            };
            let key = admin::create_api_key(store.as_ref(), &SystemClock, &mut os_rng(), spec)
                .await
                .map_err(|e| refusal(e, ""))?;
            if dev {
                eprintln!(
                    "This is a DEVELOPMENT key: it mints tokens for any identity without a \
                     signature, on a Hub started with --dev only. Never use it in production."
                );
            }
            eprintln!("API key created. The secret is shown once: store it now (e.g. in .env).");
            println!("USER_API_KEY={}", key.id);
            println!("USER_API_SECRET={}", key.secret.reveal());
            Ok(())
        }
        KeysCommand::Origins { id, origins, db } => {
            admin::check_origins(&origins).map_err(|e| refusal(e, &id))?;
            let store = open_store(&db).await?;
            admin::set_origins(store.as_ref(), &SystemClock, &id, &origins)
                .await
                .map_err(|e| refusal(e, &id))?;
            println!("{id}: origins {}", origins.join(" "));
            Ok(())
        }
        KeysCommand::Mfa { id, policy, db } => {
            let mfa = mfa_policy(&policy)?;
            let store = open_store(&db).await?;
            admin::set_mfa_policy(store.as_ref(), &SystemClock, &id, mfa)
                .await
                .map_err(|e| refusal(e, &id))?;
            println!("{id}: mfa {}", mfa.as_str());
            Ok(())
        }
        KeysCommand::List(db) => {
            let store = open_store(&db).await?;
            for k in admin::list_api_keys(store.as_ref())
                .await
                .map_err(|e| refusal(e, ""))?
            {
                println!(
                    "{}\t{}\t{}\tscopes={}\tbroker={}\torigins={}\tintrospect_any={}\tmax_sessions={}\tdev={}\tdpop={}\t{}",
                    k.id,
                    k.name,
                    format_rfc3339(k.created_at),
                    k.scopes.join(","),
                    k.can_broker,
                    k.origins.join(","),
                    k.introspect_any,
                    k.max_sessions,
                    k.dev,
                    k.dpop.as_str(),
                    k.revoked_at.map_or("active".to_owned(), |t| format!(
                        "revoked {}",
                        format_rfc3339(t)
                    )),
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, db } => {
            let store = open_store(&db).await?;
            admin::revoke_api_key(store.as_ref(), &SystemClock, &id)
                .await
                .map_err(|e| refusal(e, &id))?;
            println!("revoked {id} and every session made through it");
            Ok(())
        }
        KeysCommand::RotateSigning { drop_old, db } => {
            let store = open_store(&db).await?;
            let (kid, retired) = keygate::hub::rotate_signing_key(
                store.as_ref(),
                &OsEntropy,
                SystemClock.now(),
                drop_old,
            )
            .await
            .map_err(|e| e.to_string())?;
            println!("signing key {kid} is now current");
            for old in retired {
                if drop_old {
                    println!("retired {old}: dropped from the JWKS, its tokens no longer verify");
                } else {
                    println!("retired {old}: published until the tokens it signed have expired");
                }
            }
            Ok(())
        }
    }
}

/// The MFA policy a `--mfa`/`policy` value names (clap has checked it already).
fn mfa_policy(name: &str) -> Result<MfaPolicy, String> {
    MfaPolicy::from_name(name).ok_or_else(|| "the MFA policy must be off or required".into())
}

/// How the command words a refused operation on the key `id`.
fn refusal(e: AdminError, id: &str) -> String {
    match e {
        AdminError::InvalidOrigin => {
            "each --origin must be an origin such as https://app.example".into()
        }
        AdminError::NoSuchKey => format!("no API key {id}"),
        AdminError::NoLiveKey => format!("no live key {id}"),
        // The other refusals name no key (and the client ones are `clients`').
        e => e.to_string(),
    }
}
