//! Key material on disk: `keygen` for real deployments, the development keys the standalone
//! mode creates on first start (and reuses), and minting tokens with a token key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_shared::client::unix_now;
use janus_shared::keys::{SigningKey, TokenKey};
use janus_shared::token::TokenCodec;

/// File names inside a key directory.
pub(crate) const SERVER_KEY: &str = "server.pem";
/// The server's public key (SPKI PEM), for clients.
pub(crate) const SERVER_PUB: &str = "server.pub.pem";
/// The token key, 64 hex digits.
pub(crate) const TOKEN_KEY: &str = "token.hex";

fn write_new(path: &Path, contents: &str, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists (use --force to overwrite)", path.display());
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

/// `janus keygen`: writes a fresh key set into `dir` and says what each file is for.
pub(crate) fn keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    write_key_set(dir, force)?;
    println!(
        "wrote {dir}/{SERVER_KEY} (edge signing key, keep secret), {dir}/{SERVER_PUB} (for clients), \
         {dir}/{TOKEN_KEY} (shared with Lares, keep secret), {dir}/client.key and {dir}/client.crt \
         (optional client certificate: set keys.client_cert_file on the edge)",
        dir = dir.display()
    );
    Ok(())
}

/// Writes a fresh key set into `dir`.
pub(crate) fn write_key_set(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let server = SigningKey::generate();
    write_new(&dir.join(SERVER_KEY), &server.to_pkcs8_pem()?, force)?;
    write_new(
        &dir.join(SERVER_PUB),
        &server.verifying_key().to_public_key_pem()?,
        force,
    )?;
    write_new(
        &dir.join(TOKEN_KEY),
        &hex::encode(TokenKey::generate().as_bytes()),
        force,
    )?;
    let client_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let params = rcgen::CertificateParams::new(vec!["janus-client".to_owned()])?;
    let cert = params.self_signed(&client_key)?;
    write_new(&dir.join("client.key"), &client_key.serialize_pem(), force)?;
    write_new(&dir.join("client.crt"), &cert.pem(), force)
}

/// Makes sure `dir` holds a server key and a token key (creating what is missing); returns
/// their paths.
pub(crate) fn ensure_dev_keys(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (server, token) = (dir.join(SERVER_KEY), dir.join(TOKEN_KEY));
    if !server.exists() {
        std::fs::write(&server, SigningKey::generate().to_pkcs8_pem()?)?;
    }
    if !token.exists() {
        std::fs::write(&token, hex::encode(TokenKey::generate().as_bytes()))?;
    }
    Ok((server, token))
}

/// Reads a token key file (64 hex digits).
pub(crate) fn read_token_key(path: &Path) -> anyhow::Result<TokenKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw = hex::decode(text.trim()).with_context(|| format!("{}: not hex", path.display()))?;
    Ok(TokenKey::from_bytes(&raw)?)
}

/// Reads a server signing key (PKCS#8 PEM).
pub(crate) fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(SigningKey::from_pkcs8_pem(&text)?)
}

/// `janus token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// Token key file (64 hex digits).
    #[arg(long, default_value = ".janus/token.hex")]
    pub(crate) token_key_file: PathBuf,
    /// Player (account) id.
    #[arg(long)]
    pub(crate) uid: i64,
    /// Game server (zone) id.
    #[arg(long, default_value_t = 1)]
    pub(crate) sid: i64,
    /// Deployment colour.
    #[arg(long, default_value = "")]
    pub(crate) color: String,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 600)]
    pub(crate) ttl: i64,
}

/// Mints a GATE token for `args`.
pub(crate) fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let codec = TokenCodec::new(&read_token_key(&args.token_key_file)?);
    Ok(mint_with(&codec, args.uid, args.sid, &args.color, args.ttl))
}

/// Mints a GATE token for player `uid` of zone `sid` that expires in `ttl` seconds.
pub(crate) fn mint_with(codec: &TokenCodec, uid: i64, sid: i64, color: &str, ttl: i64) -> String {
    codec.seal(&AuthToken {
        account_id: uid,
        server_id: sid,
        color: color.to_owned(),
        timeout: unix_now() + ttl,
        status: OnlineStatus::Gate as i32,
        ..Default::default()
    })
}

/// `janus token`: prints a token.
pub(crate) fn token(args: &TokenArgs) -> anyhow::Result<()> {
    println!("{}", mint(args)?);
    Ok(())
}
