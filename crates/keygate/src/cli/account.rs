//! A signed-in user's own commands: `account` (the keys of their account) and
//! `mfa` (their second factors).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;

use keygate::client::account::{AccountClient, LinkCode, accept_link};
use keygate::client::recovery;
use keygate::hub::TokenOptions;
use keygate::identity::Identity;
use keygate::time::{Clock, SystemClock};

use super::CliResult;
use super::id::{KeyArg, key_path, load_key, print_token};

/// A user's command: sign in to a Provider with the key file, then act.
#[derive(Args)]
pub(crate) struct UserArgs {
    /// The Provider's base URL.
    #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    #[command(flatten)]
    key: KeyArg,
    /// First raise the session with this TOTP code (changing an account that has a
    /// second factor needs it).
    #[arg(long, value_name = "CODE")]
    totp: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum AccountCommand {
    /// List your account's keys.
    Keys(UserArgs),
    /// Link another key to your account. Both keys sign one link challenge:
    /// `--new-key FILE` signs both here; `--identity ID` prints a link code (and
    /// URL) for the other device, which runs `--accept CODE` with its own key.
    Link {
        #[command(flatten)]
        user: UserArgs,
        /// The new key's file (both keys on this machine).
        #[arg(long, conflicts_with_all = ["identity", "accept"])]
        new_key: Option<PathBuf>,
        /// The new key's identity (it will sign elsewhere).
        #[arg(long, conflicts_with = "accept")]
        identity: Option<String>,
        /// On the new device: a link code or link URL from the signed-in device.
        #[arg(long)]
        accept: Option<String>,
        /// A name for the new key in the key list.
        #[arg(long)]
        label: Option<String>,
    },
    /// Create your account's recovery key: 24 words, shown once, that let a new
    /// device join the account when every other key is lost. Replaces the
    /// previous one.
    RecoveryKey(UserArgs),
    /// On a new device: join the account of a recovery phrase (24 words, read
    /// from standard input). Every other session of the account ends; the
    /// phrase is spent.
    UseRecoveryKey {
        #[command(flatten)]
        user: UserArgs,
        /// A name for this device's key in the key list.
        #[arg(long)]
        label: Option<String>,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key from your account; every session it made ends at once.
    Remove {
        identity: String,
        #[command(flatten)]
        user: UserArgs,
    },
    /// Operator's last resort, on the database directly: add a new key to an
    /// account whose keys are all lost, and end every session of the account
    /// (recorded in the audit trail as account_recovered).
    Recover {
        /// The account id (acct_…).
        #[arg(long)]
        account: String,
        /// The user's new key identity.
        #[arg(long)]
        new_identity: String,
        #[command(flatten)]
        db: super::DbArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum MfaCommand {
    /// TOTP codes from an authenticator app.
    #[command(subcommand)]
    Totp(TotpCommand),
}

#[derive(Subcommand)]
pub(crate) enum TotpCommand {
    /// Enrol a new TOTP secret for your account; it is shown once.
    Enrol(UserArgs),
    /// Show a code: raises your session to aal2 (and confirms a new enrolment).
    Verify {
        code: String,
        #[command(flatten)]
        user: UserArgs,
        /// Print the whole token response as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Signs in to the Provider with the user's key (raising the session with
/// `--totp` if given).
async fn user_session(u: UserArgs) -> Result<(SigningKey, AccountClient), String> {
    let key = load_key(&key_path(u.key.key)?)?;
    let now = SystemClock.now();
    let t = keygate::client::login_http(&u.url, &key, None, TokenOptions::default(), now)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = AccountClient::new(&u.url, &t.token);
    if let Some(code) = u.totp {
        client.totp_verify(&code).await.map_err(|e| e.to_string())?;
    }
    Ok((key, client))
}

pub(crate) async fn account(a: AccountCommand) -> CliResult {
    match a {
        AccountCommand::Keys(u) => {
            let (_, client) = user_session(u).await?;
            let view = client.keys().await.map_err(|e| e.to_string())?;
            println!("account {} (totp: {})", view.account, view.totp);
            for k in view.keys {
                println!(
                    "{}{}  {}  added {}  last used {}",
                    if k.current { "* " } else { "  " },
                    k.identity,
                    k.label.as_deref().unwrap_or("-"),
                    k.added_at,
                    k.last_used_at.as_deref().unwrap_or("-"),
                );
            }
            Ok(())
        }
        AccountCommand::Link {
            user,
            new_key,
            identity,
            accept,
            label,
        } => {
            let url = user.url.clone();
            let label = label.as_deref();
            let linked = if let Some(code) = accept {
                let key = load_key(&key_path(user.key.key)?)?;
                let code = LinkCode::decode(&code).map_err(|e| e.to_string())?;
                accept_link(&url, &code, &key, label).await
            } else if let Some(path) = new_key {
                let new_key = load_key(&path)?;
                let (key, client) = user_session(user).await?;
                let new_id = Identity::from(&new_key).to_string();
                let code = client
                    .invite(&key, &new_id)
                    .await
                    .map_err(|e| e.to_string())?;
                accept_link(&url, &code, &new_key, label).await
            } else if let Some(id) = identity {
                let (key, client) = user_session(user).await?;
                let code = client.invite(&key, &id).await.map_err(|e| e.to_string())?;
                eprintln!(
                    "On the new device, within 5 minutes: keygate account link --accept CODE \
                     (or open the URL in its browser)."
                );
                println!("{}", code.encode());
                println!("{}/#link={}", url.trim_end_matches('/'), code.encode());
                return Ok(());
            } else {
                return Err("give --new-key FILE, --identity ID or --accept CODE".into());
            };
            let linked = linked.map_err(|e| e.to_string())?;
            println!("linked {} to account {}", linked.identity, linked.account);
            Ok(())
        }
        AccountCommand::RecoveryKey(user) => {
            let (key, client) = user_session(user).await?;
            let recovery = recovery::new_recovery_key();
            let linked = client
                .create_recovery_key(&key, &recovery)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "Recovery key of account {}. Write these {} words down and keep them \
                 offline: they are shown once, and whoever has them can take over the \
                 account (`keygate account use-recovery-key` on a new device). The \
                 previous recovery key, if any, no longer works.",
                linked.account,
                recovery::WORDS
            );
            println!("{}", recovery::words_of(&recovery));
            Ok(())
        }
        AccountCommand::UseRecoveryKey { user, label, json } => {
            eprintln!(
                "Type the {} words of the recovery key, then Enter:",
                recovery::WORDS
            );
            let mut words = String::new();
            std::io::stdin()
                .read_line(&mut words)
                .map_err(|e| e.to_string())?;
            let recovery = recovery::key_from_words(&words).map_err(|e| e.to_string())?;
            let (key, mut client) = user_session(user).await?;
            let t = client
                .recover(&key, &recovery, label.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "This key joined the account; every other session of it ended and the \
                 recovery key is spent: create a new one (`keygate account recovery-key`)."
            );
            print_token(&t, json)
        }
        AccountCommand::Remove { identity, user } => {
            let (_, client) = user_session(user).await?;
            let v = client.remove(&identity).await.map_err(|e| e.to_string())?;
            println!("removed {identity}; {} session(s) ended", v["revoked"]);
            Ok(())
        }
        AccountCommand::Recover {
            account,
            new_identity,
            db,
        } => {
            let identity = Identity::parse(&new_identity).map_err(|e| e.to_string())?;
            let store = super::open_store(&db).await?;
            let n =
                keygate::admin::recover_account(store.as_ref(), &SystemClock, &account, &identity)
                    .await
                    .map_err(|e| match e {
                        keygate::admin::AdminError::NoSuchAccount => {
                            format!("no account {account}")
                        }
                        e => e.to_string(),
                    })?;
            println!("linked {identity} to account {account}; {n} session(s) ended");
            Ok(())
        }
    }
}

pub(crate) async fn mfa(m: MfaCommand) -> CliResult {
    match m {
        MfaCommand::Totp(t) => totp(t).await,
    }
}

async fn totp(t: TotpCommand) -> CliResult {
    match t {
        TotpCommand::Enrol(u) => {
            let (_, client) = user_session(u).await?;
            let e = client.totp_enrol().await.map_err(|e| e.to_string())?;
            eprintln!(
                "Add this to your authenticator app now: it is shown once. Then confirm \
                 with `keygate mfa totp verify CODE`."
            );
            println!("secret: {}", e.secret);
            println!("{}", e.otpauth_uri);
            Ok(())
        }
        TotpCommand::Verify { code, user, json } => {
            let (_, mut client) = user_session(user).await?;
            let t = client.totp_verify(&code).await.map_err(|e| e.to_string())?;
            print_token(&t, json)
        }
    }
}
