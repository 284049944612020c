//! The command line: the top-level [`Cli`], its dispatch, and what several
//! command groups share (the database flag). One module per group: [`serve`]
//! (servers and the gateway), [`id`] (the user's key and `login`), [`account`]
//! (`account`, `mfa`), [`token`], [`keys`], [`clients`], [`sessions`] and
//! [`audit`] (administration).

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use keygate::server::Mode;
use keygate::store::Store;

mod account;
mod audit;
mod clients;
mod id;
mod keys;
mod serve;
mod sessions;
mod token;

use account::{AccountCommand, MfaCommand};
use audit::AuditArgs;
use clients::ClientsCommand;
use id::{DpopArgs, IdCommand, LoginArgs};
use keys::KeysCommand;
use serve::{GatewayArgs, ProviderArgs, ServeArgs};
use sessions::SessionsCommand;
use token::TokenCommand;

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "Identity tokens for users who hold their own Ed25519 keys"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the Hub and the Provider in one process on an embedded SQLite store.
    Serve(ServeArgs),
    /// Run the Hub alone (the token authority).
    Hub(ServeArgs),
    /// Run a Provider alone, talking to a remote Hub.
    Provider(ProviderArgs),
    /// Your identity key: create it or show it.
    #[command(subcommand)]
    Id(IdCommand),
    /// Sign in to a Provider with your key and print the token.
    Login(LoginArgs),
    /// Print a DPoP proof (RFC 9449) made with your key for one request, to send
    /// as the `DPoP` header with a key-bound token (docs/dpop.md), e.g.
    /// curl -H "Authorization: DPoP $T" -H "DPoP: $(keygate dpop --url URL --token $T)" URL
    Dpop(DpopArgs),
    /// Your account: the keys that make it up (docs/accounts.md).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Your second factors.
    #[command(subcommand)]
    Mfa(MfaCommand),
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apps' API keys (administration, on the database directly).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// OpenID Connect clients of the Hub (administration, on the database
    /// directly; docs/oidc.md).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Users' sessions (administration, on the database directly).
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// The audit trail: security events, newest first (administration, on the
    /// database directly; docs/audit.md).
    Audit(AuditArgs),
    /// Run the token-checking reverse proxy in front of your services.
    Gateway(GatewayArgs),
    /// Print the OpenAPI 3.1 document of the HTTP endpoints (docs/openapi.md);
    /// `keygate openapi > docs/openapi.json` regenerates the checked-in copy.
    Openapi,
    /// Benchmarks: sign-in load, crypto floor, scale (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(keygate::bench::BenchCommand),
}

#[derive(Args, Clone)]
pub(crate) struct DbArgs {
    /// Database URL.
    #[arg(long, env = "KEYGATE_DATABASE", default_value = "sqlite://keygate.db")]
    pub(crate) database: String,
}

pub(crate) type CliResult = Result<(), String>;

pub(crate) async fn run(command: Command) -> CliResult {
    match command {
        Command::Serve(a) => serve::serve(Mode::Serve, a, None).await,
        Command::Hub(a) => serve::serve(Mode::Hub, a, None).await,
        Command::Provider(a) => serve::provider(a).await,
        Command::Id(c) => id::id(c),
        Command::Login(a) => id::login(a).await,
        Command::Dpop(a) => id::dpop(a),
        Command::Account(a) => account::account(a).await,
        Command::Mfa(m) => account::mfa(m).await,
        Command::Token(t) => token::token(t).await,
        Command::Keys(k) => keys::keys(k).await,
        Command::Clients(c) => clients::clients(c).await,
        Command::Sessions(s) => sessions::sessions(s).await,
        Command::Audit(a) => audit::audit(a).await,
        Command::Gateway(a) => serve::gateway(a).await,
        Command::Openapi => {
            print!("{}", keygate::openapi::json());
            Ok(())
        }
        Command::Bench(b) => keygate::bench::run(b).await,
    }
}

pub(crate) async fn open_store(db: &DbArgs) -> Result<Arc<dyn Store>, String> {
    keygate::store::open(&db.database)
        .await
        .map_err(|e| format!("cannot open {}: {e}", db.database))
}
