use super::*;

fn der(pem: &str) -> CertificateDer<'static> {
    load_certs(pem).unwrap().remove(0)
}

/// A certificate from `ca` naming `names` (not one of Janus's roles).
fn named(ca: &Authority, names: &[&str]) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
    Issued {
        cert_pem: params.signed_by(&key, &issuer).unwrap().pem(),
        key_pem: key.serialize_pem(),
    }
}

fn load(ca: &Authority, issued: &Issued) -> Result<Material> {
    Material::load(
        ca.cert_pem().unwrap().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
}

#[test]
fn an_issued_certificate_names_its_role_and_loads() {
    let ca = Authority::generate().unwrap();
    for role in Role::ALL {
        let issued = ca.issue(role).unwrap();
        assert_eq!(role_of(&der(&issued.cert_pem)), Some(role));
        assert_eq!(load(&ca, &issued).unwrap().role, role);
    }
}

#[test]
fn a_certificate_naming_no_role_or_two_names_none() {
    let ca = Authority::generate().unwrap();
    let other = named(&ca, &["edge.example.com"]);
    assert_eq!(role_of(&der(&other.cert_pem)), None);
    let two = named(&ca, &[Role::Edge.identity(), Role::Broker.identity()]);
    assert_eq!(role_of(&der(&two.cert_pem)), None);
    let e = load(&ca, &two).unwrap_err().to_string();
    assert!(
        e.starts_with("internal_tls.cert_file: names no single role"),
        "{e}"
    );
}

#[test]
fn material_from_another_ca_or_with_the_wrong_key_is_refused_naming_the_field() {
    let (ca, other) = (
        Authority::generate().unwrap(),
        Authority::generate().unwrap(),
    );
    let foreign = other.issue(Role::Edge).unwrap();
    let e = load(&ca, &foreign).unwrap_err().to_string();
    assert!(
        e.starts_with("internal_tls.cert_file: not valid under ca_file"),
        "{e}"
    );
    let mut mismatched = ca.issue(Role::Edge).unwrap();
    mismatched.key_pem = ca.issue(Role::Edge).unwrap().key_pem;
    let e = load(&ca, &mismatched).unwrap_err().to_string();
    assert!(e.starts_with("internal_tls.key_file:"), "{e}");
    let e = Material::load(b"", mismatched.cert_pem.as_bytes(), b"")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("internal_tls.ca_file:"), "{e}");
}

#[test]
fn a_ca_rebuilt_from_its_key_issues_certificates_the_first_certificate_verifies() {
    let ca = Authority::generate().unwrap();
    let again = Authority::from_key_pem(&ca.key_pem()).unwrap();
    let issued = again.issue(Role::Game).unwrap();
    assert_eq!(load(&ca, &issued).unwrap().role, Role::Game);
}

/// The subject, start and end (unix seconds) of a PEM certificate.
fn subject_and_validity(pem: &str) -> (String, u64, u64) {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(&der(pem)).unwrap();
    let validity = cert.tbs_certificate.validity;
    (
        cert.tbs_certificate.subject.to_string(),
        validity.not_before.to_unix_duration().as_secs(),
        validity.not_after.to_unix_duration().as_secs(),
    )
}

#[test]
fn cas_are_named_by_their_keys_and_certificates_are_valid_from_now() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (ca, other) = (
        Authority::generate().unwrap(),
        Authority::generate().unwrap(),
    );
    let (name, start, end) = subject_and_validity(&ca.cert_pem().unwrap());
    assert!(name.starts_with("CN=Janus deployment CA "), "{name}");
    assert_ne!(name, subject_and_validity(&other.cert_pem().unwrap()).0);
    let again = Authority::from_key_pem(&ca.key_pem()).unwrap();
    assert_eq!(subject_and_validity(&again.cert_pem().unwrap()).0, name);
    let year = 365 * 86_400;
    assert!(start <= now && now - start <= 301, "{start} vs {now}");
    assert!((end - now).abs_diff(10 * year) <= 60, "{end} vs {now}");
    let (_, start, end) = subject_and_validity(&ca.issue(Role::Edge).unwrap().cert_pem);
    assert!(start <= now && now - start <= 301, "{start} vs {now}");
    assert!((end - now).abs_diff(2 * year) <= 60, "{end} vs {now}");
}

#[test]
fn admit_lets_through_the_configured_roles_and_plaintext_only_where_allowed() {
    let roles = [Role::Game, Role::Admin];
    assert_eq!(admit(Link::Open, &[], false), Ok(()));
    assert_eq!(admit(Link::Tls(Role::Game), &roles, false), Ok(()));
    assert_eq!(
        admit(Link::Tls(Role::Edge), &roles, true),
        Err("wrong_role")
    );
    assert_eq!(admit(Link::Plaintext, &roles, true), Ok(()));
    assert_eq!(admit(Link::Plaintext, &roles, false), Err("plaintext"));
}

#[test]
fn the_interceptor_counts_refusals_and_fails_closed_without_a_peer() {
    use tonic::service::Interceptor;
    let refused = IntCounterVec::new(
        prometheus::Opts::new("refused", "refused"),
        &["api", "reason"],
    )
    .unwrap();
    let mut edges = Admit::new("edge_link", &[Role::Edge], false, Some(refused.clone()));
    let from = |link: Option<Link>| {
        let mut request = tonic::Request::new(());
        if let Some(link) = link {
            request.extensions_mut().insert(Peer {
                remote: "10.0.0.7:5000".parse().unwrap(),
                link,
            });
        }
        request
    };
    assert!(edges.call(from(Some(Link::Tls(Role::Edge)))).is_ok());
    let denied = edges.call(from(Some(Link::Tls(Role::Game)))).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.message(), "edge_link does not admit role game");
    let denied = edges.call(from(None)).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        !denied.message().contains("10.0.0.7"),
        "{}",
        denied.message()
    );
    assert_eq!(
        refused
            .with_label_values(&["edge_link", "wrong_role"])
            .get(),
        1
    );
    assert_eq!(
        refused.with_label_values(&["edge_link", "no_peer"]).get(),
        1
    );
}

#[test]
fn a_partial_section_names_each_missing_field() {
    let config = InternalTlsConfig {
        ca_file: "ca.pem".into(),
        reload_ms: Duration::ZERO,
        ..Default::default()
    };
    let mut problems = Problems::default();
    config.check(&mut problems);
    let text = format!("{problems:?}");
    for field in ["cert_file", "key_file", "reload_ms"] {
        assert!(text.contains(&format!("internal_tls.{field}")), "{text}");
    }
    assert!(!text.contains("internal_tls.ca_file"), "{text}");
    let mut problems = Problems::default();
    InternalTlsConfig::default().check(&mut problems);
    assert_eq!(format!("{problems:?}"), "Problems([])");
}

#[test]
fn reload_swaps_in_changed_material_and_keeps_the_old_when_the_new_is_refused() {
    let dir = std::env::temp_dir().join(format!("janus-internal-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Authority::generate().unwrap();
    let write = |issued: &Issued| {
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
    };
    std::fs::write(dir.join("ca.pem"), ca.cert_pem().unwrap()).unwrap();
    write(&ca.issue(Role::Edge).unwrap());
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let config = InternalTlsConfig {
        ca_file: path("ca.pem"),
        cert_file: path("cert.pem"),
        key_file: path("key.pem"),
        reload_ms: Duration::from_millis(1),
    };
    let tls = InternalTls::load(&config).unwrap().unwrap();
    assert_eq!(tls.current().role, Role::Edge);
    assert!(!tls.reload().unwrap(), "nothing changed");

    write(&ca.issue(Role::Broker).unwrap());
    assert!(tls.reload().unwrap());
    assert_eq!(tls.current().role, Role::Broker);

    // Half a rotation: the new certificate beside the old key.
    let next = ca.issue(Role::Game).unwrap();
    std::fs::write(dir.join("cert.pem"), &next.cert_pem).unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.current().role, Role::Broker, "the old stays in force");
    assert!(
        !tls.reload().unwrap(),
        "the same refused bytes are not tried again"
    );
    std::fs::write(dir.join("key.pem"), &next.key_pem).unwrap();
    assert!(tls.reload().unwrap());
    assert_eq!(tls.current().role, Role::Game);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_ca_file_means_no_internal_tls() {
    assert!(
        InternalTls::load(&InternalTlsConfig::default())
            .unwrap()
            .is_none()
    );
}
