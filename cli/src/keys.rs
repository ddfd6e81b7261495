//! Key material on disk: `keygen` for real deployments, the development keys the standalone
//! mode creates on first start (and reuses), and minting tokens with a token key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_shared::client::unix_now;
use janus_shared::internal_tls::{Authority, Issued, Role};
use janus_shared::keys::{SigningKey, TokenKey, TokenKeyFormat};
use janus_shared::token::TokenCodec;

/// File names inside a key directory: the server's signing key (PKCS#8 v1 PEM).
pub(crate) const SERVER_KEY: &str = "server.pem";
/// The server's public key (SPKI PEM), for Janus clients.
pub(crate) const SERVER_PUB: &str = "server.pub.pem";
/// The server's public key in a self-signed X.509 certificate (PEM), for go-pantheon clients.
pub(crate) const SERVER_CERT: &str = "server.crt";
/// The token key, 64 hex digits.
pub(crate) const TOKEN_KEY: &str = "token.hex";
/// The optional client certificate's private key (PKCS#8 v1 PEM) and the certificate.
const CLIENT_KEY: &str = "client.key";
const CLIENT_CERT: &str = "client.crt";
/// The internal set (PROTOCOL.md §15) lives in this subdirectory: the deployment CA and its
/// key, and `<role>.pem` / `<role>.key` for every role.
const INTERNAL: &str = "internal";
pub(crate) const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// Writes `path` unless it exists (or `force`); a `secret` readable by its owner only (0600).
fn write_new(path: &Path, contents: &str, force: bool, secret: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists (use --force to overwrite)", path.display());
    }
    let written = if secret {
        janus_shared::keys::write_secret(path, contents.as_bytes())
    } else {
        std::fs::write(path, contents)
    };
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// `janus keygen`: writes a fresh key set and internal set into `dir` and says what each
/// file is for.
pub(crate) fn keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    write_key_set(dir, force)?;
    println!(
        "wrote {dir}/{SERVER_KEY} (edge signing key, keep secret), {dir}/{SERVER_PUB} (for Janus \
         clients), {dir}/{SERVER_CERT} (the same public key in a certificate, for go-pantheon \
         clients), {dir}/{TOKEN_KEY} (shared with Lares, keep secret), {dir}/{CLIENT_KEY} and \
         {dir}/{CLIENT_CERT} (optional client certificate: set keys.client_cert_file on the edge)",
        dir = dir.display()
    );
    internal_keygen(dir, force)
}

/// The internal set's directory inside a key directory.
pub(crate) fn internal_dir(dir: &Path) -> PathBuf {
    dir.join(INTERNAL)
}

/// Writes a fresh deployment CA and a certificate for every role into `dir/internal/`.
pub(crate) fn internal_keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    let internal = internal_dir(dir);
    std::fs::create_dir_all(&internal)
        .with_context(|| format!("cannot create {}", internal.display()))?;
    let ca = Authority::generate()?;
    write_new(&internal.join(CA_CERT), &ca.cert_pem()?, force, false)?;
    write_new(&internal.join(CA_KEY), &ca.key_pem(), force, true)?;
    for role in Role::ALL {
        write_issued(&internal, role, &ca.issue(role)?, force)?;
    }
    println!(
        "wrote {dir}/{CA_CERT} (the deployment CA: every process's internal_tls.ca_file), \
         {dir}/{CA_KEY} (its key: keep it offline, it issues every role) and <role>.pem / \
         <role>.key for edge, broker, game and admin (internal_tls.cert_file and key_file)",
        dir = internal.display()
    );
    Ok(())
}

/// `janus keygen --issue <role>`: a fresh certificate and key for `role` from the CA in
/// `dir/internal/`, replacing the old ones in place (processes reading them reload them).
pub(crate) fn issue(dir: &Path, role: Role) -> anyhow::Result<()> {
    let internal = internal_dir(dir);
    let ca_key = internal.join(CA_KEY);
    let key = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("cannot read the CA key {}", ca_key.display()))?;
    let issued = Authority::from_key_pem(&key)?.issue(role)?;
    write_issued(&internal, role, &issued, true)?;
    println!(
        "wrote {dir}/{role}.pem and {dir}/{role}.key",
        dir = internal.display()
    );
    Ok(())
}

/// Writes `role`'s certificate and key; each file is replaced whole (written beside, then
/// renamed), so a process reloading it never reads half of one.
fn write_issued(internal: &Path, role: Role, issued: &Issued, force: bool) -> anyhow::Result<()> {
    for (name, contents, secret) in [
        (format!("{role}.key"), &issued.key_pem, true),
        (format!("{role}.pem"), &issued.cert_pem, false),
    ] {
        let path = internal.join(&name);
        let next = internal.join(format!(".{name}.next"));
        let _ = std::fs::remove_file(&next);
        write_new(&next, contents, true, secret)?;
        if path.exists() && !force {
            bail!("{} exists (use --force to overwrite)", path.display());
        }
        std::fs::rename(&next, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A self-signed X.509 certificate (PEM) of `key` for `name` (subject common name and DNS
/// name), valid from 1975 to 4096: what go-pantheon clients check the server's handshake
/// signature with (and what an edge's `keys.client_cert_file` names).
pub(crate) fn self_signed_certificate(key: &SigningKey, name: &str) -> anyhow::Result<String> {
    let pair =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key.to_pkcs8_pem()?, &rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ok(params.self_signed(&pair)?.pem())
}

/// Writes a fresh key set into `dir`.
pub(crate) fn write_key_set(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let server = SigningKey::generate();
    write_new(&dir.join(SERVER_KEY), &server.to_pkcs8_pem()?, force, true)?;
    write_new(
        &dir.join(SERVER_PUB),
        &server.verifying_key().to_public_key_pem()?,
        force,
        false,
    )?;
    write_new(
        &dir.join(SERVER_CERT),
        &self_signed_certificate(&server, "janus-server")?,
        force,
        false,
    )?;
    write_new(
        &dir.join(TOKEN_KEY),
        &hex::encode(TokenKey::generate().as_bytes()),
        force,
        true,
    )?;
    let client = SigningKey::generate();
    write_new(&dir.join(CLIENT_KEY), &client.to_pkcs8_pem()?, force, true)?;
    write_new(
        &dir.join(CLIENT_CERT),
        &self_signed_certificate(&client, "janus-client")?,
        force,
        false,
    )
}

/// Makes sure `dir` holds a server key, its public key (for clients) and a token key
/// (creating what is missing); returns the paths of the server key and the token key.
pub(crate) fn ensure_dev_keys(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (server, token) = (dir.join(SERVER_KEY), dir.join(TOKEN_KEY));
    if !server.exists() {
        janus_shared::keys::write_secret(
            &server,
            SigningKey::generate().to_pkcs8_pem()?.as_bytes(),
        )?;
    }
    let public = dir.join(SERVER_PUB);
    if !public.exists() {
        let key = read_signing_key(&server)?;
        std::fs::write(&public, key.verifying_key().to_public_key_pem()?)?;
    }
    if !token.exists() {
        janus_shared::keys::write_secret(
            &token,
            hex::encode(TokenKey::generate().as_bytes()).as_bytes(),
        )?;
    }
    Ok((server, token))
}

/// Reads a token key file written as `format` says.
pub(crate) fn read_token_key(path: &Path, format: TokenKeyFormat) -> anyhow::Result<TokenKey> {
    let contents =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    TokenKey::parse(&contents, format).with_context(|| {
        format!(
            "--token-key-file {} (--token-key-format {format})",
            path.display()
        )
    })
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
    /// Token key file: 16, 24 or 32 bytes, as --token-key-format says.
    #[arg(long, default_value = ".janus/token.hex")]
    pub(crate) token_key_file: PathBuf,
    /// `hex` (32, 48 or 64 hex digits) or `raw` (the key string as go-pantheon's configs hold
    /// it; one trailing line end is ignored).
    #[arg(long, default_value = "hex")]
    pub(crate) token_key_format: TokenKeyFormat,
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
    let codec = TokenCodec::new(&read_token_key(
        &args.token_key_file,
        args.token_key_format,
    )?);
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
