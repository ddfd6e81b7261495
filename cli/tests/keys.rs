//! Key files as other tools read them: what `janus keygen` writes, OpenSSL (the `openssl` of
//! the machine, 3.0 on Debian 12) reads, and its certificates carry the same keys; `janus token`
//! mints with go-pantheon's raw token keys of every AES size as well as with hex ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use janus_protocol::keys::{TokenKey, VerifyingKey};
use janus_protocol::token::TokenCodec;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-cli-keys-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn janus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `openssl <args>` and returns its standard output; fails loudly when OpenSSL is absent.
fn openssl(args: &[&str]) -> String {
    let output = match Command::new("openssl").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "these tests read keys with OpenSSL, which is not installed: apt-get install openssl"
            )
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    };
    assert!(
        output.status.success(),
        "openssl {args:?} refused it: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn public_key(pem: &str) -> VerifyingKey {
    VerifyingKey::from_public_key_pem(pem).unwrap()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn openssl_reads_the_keygen_keys_and_the_certificates_carry_them() {
    let dir = temp_dir("keygen");
    let output = janus(&["keygen", "--dir", &dir.display().to_string()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Private keys are for their owner only, whatever the umask.
    for file in ["server.pem", "token.hex", "client.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
    let server = public_key(&std::fs::read_to_string(dir.join("server.pub.pem")).unwrap());

    // The private keys load (OpenSSL 3.0 refuses PKCS#8 v2) and their public halves match.
    assert_eq!(
        public_key(&openssl(&[
            "pkey",
            "-in",
            &path(&dir, "server.pem"),
            "-pubout"
        ])),
        server
    );
    assert_eq!(
        public_key(&openssl(&[
            "x509",
            "-in",
            &path(&dir, "server.crt"),
            "-noout",
            "-pubkey"
        ])),
        server,
        "server.crt carries the signing key"
    );
    let text = openssl(&[
        "x509",
        "-in",
        &path(&dir, "server.crt"),
        "-noout",
        "-subject",
    ]);
    assert!(text.contains("CN = janus-server"), "{text}");
    assert_eq!(
        public_key(&openssl(&[
            "pkey",
            "-in",
            &path(&dir, "client.key"),
            "-pubout"
        ])),
        public_key(&openssl(&[
            "x509",
            "-in",
            &path(&dir, "client.crt"),
            "-noout",
            "-pubkey"
        ])),
        "client.crt carries client.key's key"
    );
    // v1, as `openssl genpkey -algorithm ed25519` writes: no public key attached.
    let text = openssl(&["asn1parse", "-in", &path(&dir, "server.pem")]);
    assert!(text.contains("INTEGER           :00"), "{text}");
    assert!(!text.contains("cont [ 1 ]"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn janus_token_mints_with_raw_keys_of_every_size_and_with_hex() {
    let dir = temp_dir("token");
    let key_file = path(&dir, "token.key");
    let mint = |format: &str| {
        janus(&[
            "token",
            "--uid",
            "9",
            "--token-key-file",
            &key_file,
            "--token-key-format",
            format,
        ])
    };
    for key in [
        "0123456789abcdef",
        "lares-key-of-24-chars!!!",
        "0123456789abcdef0123456789abcdef",
    ] {
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let output = mint("raw");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout).unwrap();
        let codec = TokenCodec::new(&TokenKey::from_bytes(key.as_bytes()).unwrap());
        assert_eq!(
            codec.open(token.trim()).unwrap().account_id,
            9,
            "{}-byte raw key",
            key.len()
        );

        std::fs::write(&key_file, hex::encode(key)).unwrap();
        let token = String::from_utf8(mint("hex").stdout).unwrap();
        assert_eq!(
            codec.open(token.trim()).unwrap().account_id,
            9,
            "{}-byte hex key",
            key.len()
        );
    }

    std::fs::write(&key_file, "twenty-bytes-of-key!").unwrap();
    let output = mint("raw");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--token-key-file") && err.contains("got 20 bytes"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
