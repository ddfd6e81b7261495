//! Key material on disk: `keygen` for real deployments, the development keys the standalone
//! mode creates on first start (and reuses), and minting tokens with a token key.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use janus_client::unix_now;
use janus_ops::internal_tls::{Authority, Issued, Role};
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_protocol::keys::{SigningKey, TokenKey, TokenKeyFormat};
use janus_protocol::token::TokenCodec;

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
/// key, and a directory per role holding what that role's process (and nothing else) mounts:
/// `ca.pem` (the CA it trusts), `cert.pem` and `key.pem`.
const INTERNAL: &str = "internal";
pub(crate) const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
pub(crate) const ROLE_CERT: &str = "cert.pem";
pub(crate) const ROLE_KEY: &str = "key.pem";

/// A file keygen writes.
struct NewFile {
    path: PathBuf,
    contents: String,
    /// Readable by its owner only (0600).
    secret: bool,
}

impl NewFile {
    fn public(path: PathBuf, contents: String) -> Self {
        Self {
            path,
            contents,
            secret: false,
        }
    }

    fn secret(path: PathBuf, contents: String) -> Self {
        Self {
            path,
            contents,
            secret: true,
        }
    }
}

/// Writes `files`; unless `force`, refuses before writing any of them when one exists. Each
/// file is replaced whole (written beside, then renamed), so a process reloading it never reads
/// half of one.
fn write_all(files: &[NewFile], force: bool) -> anyhow::Result<()> {
    if !force && let Some(existing) = files.iter().find(|file| file.path.exists()) {
        bail!(
            "{} exists (use --force to overwrite); nothing written",
            existing.path.display()
        );
    }
    for file in files {
        let parent = file.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let name = file.path.file_name().unwrap_or_default().to_string_lossy();
        let next = parent.join(format!(".{name}.next"));
        let written = if file.secret {
            janus_protocol::keys::write_secret(&next, file.contents.as_bytes())
        } else {
            std::fs::write(&next, &file.contents)
        };
        written
            .and_then(|()| std::fs::rename(&next, &file.path))
            .with_context(|| format!("cannot write {}", file.path.display()))?;
    }
    Ok(())
}

/// `janus keygen`: writes a fresh key set and internal set into `dir` (nothing when a file
/// would be overwritten without `force`) and says what each file is for.
pub(crate) fn keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    let mut files = key_set(dir)?;
    files.extend(internal_set(dir)?);
    write_all(&files, force)?;
    print_key_set(dir);
    print_internal_set(dir);
    Ok(())
}

/// The internal set's directory inside a key directory.
pub(crate) fn internal_dir(dir: &Path) -> PathBuf {
    dir.join(INTERNAL)
}

/// A role's directory of the internal set.
fn role_dir(dir: &Path, role: Role) -> PathBuf {
    internal_dir(dir).join(role.to_string())
}

/// Writes a fresh deployment CA and a certificate for every role into `dir/internal/`.
pub(crate) fn internal_keygen(dir: &Path, force: bool) -> anyhow::Result<()> {
    write_all(&internal_set(dir)?, force)?;
    print_internal_set(dir);
    Ok(())
}

/// A fresh deployment CA, and every role's directory: the CA's certificate, the role's
/// certificate and key.
fn internal_set(dir: &Path) -> anyhow::Result<Vec<NewFile>> {
    let internal = internal_dir(dir);
    let ca = Authority::generate()?;
    let ca_pem = ca.cert_pem()?;
    let mut files = vec![
        NewFile::public(internal.join(CA_CERT), ca_pem.clone()),
        NewFile::secret(internal.join(CA_KEY), ca.key_pem()),
    ];
    for role in Role::ALL {
        files.push(NewFile::public(
            role_dir(dir, role).join(CA_CERT),
            ca_pem.clone(),
        ));
        files.extend(issued_files(dir, role, ca.issue(role)?));
    }
    Ok(files)
}

fn print_internal_set(dir: &Path) {
    println!(
        "wrote {internal}/{CA_CERT} (the deployment CA), {internal}/{CA_KEY} (its key: keep it \
         offline, it issues every role) and a directory per role ({internal}/edge, broker, game, \
         admin) holding {CA_CERT}, {ROLE_CERT} and {ROLE_KEY} (internal_tls.ca_file, cert_file, \
         key_file): give each process its own role's directory only",
        internal = internal_dir(dir).display()
    );
}

/// `janus keygen --issue <role>`: a fresh certificate and key for `role` from the CA in
/// `dir/internal/`, replacing the old ones in its directory (processes reading them reload
/// them).
pub(crate) fn issue(dir: &Path, role: Role) -> anyhow::Result<()> {
    let ca_key = internal_dir(dir).join(CA_KEY);
    let key = std::fs::read_to_string(&ca_key)
        .with_context(|| format!("cannot read the CA key {}", ca_key.display()))?;
    let issued = Authority::from_key_pem(&key)?.issue(role)?;
    write_all(&issued_files(dir, role, issued), true)?;
    println!(
        "wrote {dir}/{ROLE_CERT} and {dir}/{ROLE_KEY}",
        dir = role_dir(dir, role).display()
    );
    Ok(())
}

/// `role`'s certificate and key; the key first, so a process reloading between the two sees a
/// pair that does not match and keeps its old one until the certificate follows.
fn issued_files(dir: &Path, role: Role, issued: Issued) -> [NewFile; 2] {
    let role_dir = role_dir(dir, role);
    [
        NewFile::secret(role_dir.join(ROLE_KEY), issued.key_pem),
        NewFile::public(role_dir.join(ROLE_CERT), issued.cert_pem),
    ]
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

/// Writes a fresh key set into `dir` (nothing when a file would be overwritten without
/// `force`).
pub(crate) fn write_key_set(dir: &Path, force: bool) -> anyhow::Result<()> {
    write_all(&key_set(dir)?, force)
}

/// A fresh key set: the server's signing key, its public key and certificate, a token key, a
/// client certificate and its key.
fn key_set(dir: &Path) -> anyhow::Result<Vec<NewFile>> {
    let server = SigningKey::generate();
    let client = SigningKey::generate();
    Ok(vec![
        NewFile::secret(dir.join(SERVER_KEY), server.to_pkcs8_pem()?),
        NewFile::public(
            dir.join(SERVER_PUB),
            server.verifying_key().to_public_key_pem()?,
        ),
        NewFile::public(
            dir.join(SERVER_CERT),
            self_signed_certificate(&server, "janus-server")?,
        ),
        NewFile::secret(
            dir.join(TOKEN_KEY),
            hex::encode(TokenKey::generate().as_bytes()),
        ),
        NewFile::secret(dir.join(CLIENT_KEY), client.to_pkcs8_pem()?),
        NewFile::public(
            dir.join(CLIENT_CERT),
            self_signed_certificate(&client, "janus-client")?,
        ),
    ])
}

pub(crate) fn print_key_set(dir: &Path) {
    println!(
        "wrote {dir}/{SERVER_KEY} (edge signing key, keep secret), {dir}/{SERVER_PUB} (for Janus \
         clients), {dir}/{SERVER_CERT} (the same public key in a certificate, for go-pantheon \
         clients), {dir}/{TOKEN_KEY} (shared with Lares, keep secret), {dir}/{CLIENT_KEY} and \
         {dir}/{CLIENT_CERT} (optional client certificate: set keys.client_cert_file on the edge)",
        dir = dir.display()
    );
}

/// Makes sure `dir` holds a server key, its public key (for clients) and a token key
/// (creating what is missing); returns the paths of the server key and the token key.
pub(crate) fn ensure_dev_keys(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (server, token) = (dir.join(SERVER_KEY), dir.join(TOKEN_KEY));
    if !server.exists() {
        janus_protocol::keys::write_secret(
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
        janus_protocol::keys::write_secret(
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

#[cfg(test)]
mod tests {
    use janus_ops::internal_tls::Material;

    use super::*;

    /// A fresh directory of this test's own (removed when dropped), and the key directory
    /// inside it that keygen creates.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        (root, dir)
    }

    fn role_material(dir: &Path, role: Role) -> Material {
        let read = |name: &str| std::fs::read(role_dir(dir, role).join(name)).unwrap();
        Material::load(&read(CA_CERT), &read(ROLE_CERT), &read(ROLE_KEY)).unwrap()
    }

    #[test]
    fn each_role_gets_a_directory_of_its_own_that_loads() {
        let (_root, dir) = scratch();
        keygen(&dir, false).unwrap();
        for role in Role::ALL {
            assert_eq!(role_material(&dir, role).role, role);
            let mut names: Vec<String> = std::fs::read_dir(role_dir(&dir, role))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            // The CA's key and the other roles' keys are not in a role's directory.
            assert_eq!(names, [CA_CERT, ROLE_CERT, ROLE_KEY]);
        }
        assert!(internal_dir(&dir).join(CA_KEY).exists());
    }

    #[test]
    fn keygen_writes_nothing_when_one_file_exists() {
        let (_root, dir) = scratch();
        keygen(&dir, false).unwrap();
        let token = std::fs::read(dir.join(TOKEN_KEY)).unwrap();
        let edge_cert = role_dir(&dir, Role::Edge).join(ROLE_CERT);
        std::fs::remove_file(&edge_cert).unwrap();
        let err = keygen(&dir, false).unwrap_err().to_string();
        assert!(
            err.contains("exists") && err.contains("nothing written"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.join(TOKEN_KEY)).unwrap(), token);
        assert!(!edge_cert.exists(), "a refused keygen wrote a file");
        keygen(&dir, true).unwrap();
        assert_ne!(std::fs::read(dir.join(TOKEN_KEY)).unwrap(), token);
    }

    #[test]
    fn issue_replaces_one_roles_pair_under_the_same_ca() {
        let (_root, dir) = scratch();
        keygen(&dir, false).unwrap();
        let read = |role, name| std::fs::read(role_dir(&dir, role).join(name)).unwrap();
        let (broker, edge) = (read(Role::Broker, ROLE_CERT), read(Role::Edge, ROLE_CERT));
        issue(&dir, Role::Broker).unwrap();
        assert_ne!(read(Role::Broker, ROLE_CERT), broker);
        assert_eq!(read(Role::Edge, ROLE_CERT), edge);
        assert_eq!(role_material(&dir, Role::Broker).role, Role::Broker);
    }
}
