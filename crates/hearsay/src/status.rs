//! `hearsay status` and `hearsay getendpoints`: operator views fetched from a node's admin
//! API (`hearsay_server::admin::client` does the request and the rendering).

use hearsay_server::admin::client;

/// Arguments of `hearsay status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's admin HTTP address ([server] admin_listen).
    #[arg(long, default_value = client::DEFAULT_ADMIN_ADDR)]
    pub admin: String,
    /// Keyspace whose effective ownership the Owns column shows.
    #[arg(long, default_value = "default")]
    pub keyspace: String,
}

/// Arguments of `hearsay getendpoints`.
#[derive(Debug, clap::Args)]
pub struct GetEndpointsArgs {
    /// Keyspace of the key.
    pub keyspace: String,
    /// The key (as text; its UTF-8 bytes are hashed).
    pub key: String,
    /// The node's admin HTTP address ([server] admin_listen).
    #[arg(long, default_value = client::DEFAULT_ADMIN_ADDR)]
    pub admin: String,
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    print!("{}", client::status(&args.admin, &args.keyspace)?);
    Ok(())
}

pub fn getendpoints(args: GetEndpointsArgs) -> anyhow::Result<()> {
    print!(
        "{}",
        client::getendpoints(&args.admin, &args.keyspace, args.key.as_bytes())?
    );
    Ok(())
}
