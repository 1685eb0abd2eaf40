//! Config daemons in process: over TLS, two daemons with certificates of one CA take a push in `require` mode and hand the running config only to a peer proving it is a box; `--hup PIDFILE` signals a process on every switch.

use std::path::Path;
use std::time::{Duration, Instant};

use configd::client::{CallError, call};
use configd::net::Tls;
use configd::push::{PushOptions, sign_and_push};
use configd::wire::{Request, Response};
use configd::{AdminKey, Daemon, DaemonOptions, sign_config};
use popnet_config::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const ZONE: &str = "popnet.example";

/// A CA: its certificate (PEM) and what signs box certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A certificate for box `name` (`configd.<name>.<zone>`) from `ca`, written to
/// `<dir>/<name>.crt` and `.key`.
fn box_cert(ca: &Ca, dir: &Path, name: &str) {
    let key = KeyPair::generate().unwrap();
    let p = CertificateParams::new(vec![format!("configd.{name}.{ZONE}")]).unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Box m controls box c; with `ca`, TLS in `require` mode with its certificate and the
/// boxes' certificates in `dir`.
fn config(
    version: u32,
    admin: &AdminKey,
    ca: Option<&Ca>,
    dir: &Path,
    ports: (u16, u16),
) -> String {
    let base = popnet_config::demo_without_logs()
        .replacen("version = 1\n", &format!("version = {version}\n"), 1)
        .replacen(
            "[probes]\n",
            &format!(
                "[[network.admins]]\nname = \"alice\"\nkey = \"{}\"\n\n[probes]\n",
                admin.public_b64()
            ),
            1,
        );
    assert!(base.contains(&format!("version = {version}\n")));
    let mut t = base;
    t.push_str("\n[configd]\nmasters = [\"m\"]\ntimeout = \"5s\"\n");
    if let Some(ca) = ca {
        t.push_str(&format!(
            "\n[configd.tls]\nmode = \"require\"\nca = \"\"\"\n{}\"\"\"\n",
            ca.pem
        ));
    }
    for (name, port, pop, controls) in [
        ("m", ports.0, "pop = \"local\"\n", "[\"c\"]"),
        ("c", ports.1, "", "[]"),
    ] {
        t.push_str(&format!(
            "\n[[configd.boxes]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n{pop}controls = {controls}\n"
        ));
        if ca.is_some() {
            t.push_str(&format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                dir.join(format!("{name}.crt")).display(),
                dir.join(format!("{name}.key")).display(),
            ));
        }
    }
    t
}

fn start(dir: &Path, name: &str, bootstrap: &Path, hup: Vec<std::path::PathBuf>) -> Daemon {
    Daemon::start(&DaemonOptions {
        name: name.into(),
        state_dir: dir.join(format!("state-{name}")),
        bootstrap: Some(bootstrap.to_path_buf()),
        listen: None,
        socket: None,
        hup,
    })
    .unwrap_or_else(|e| panic!("configd {name}: {e}"))
}

fn fetch(tls: Option<&Tls>, port: u16) -> Result<Response, CallError> {
    call(
        ([127, 0, 0, 1], port).into(),
        "m",
        tls,
        &Request::Fetch,
        Duration::from_secs(5),
    )
}

#[test]
fn a_push_over_tls_reaches_every_box_and_the_config_goes_only_to_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = AdminKey::generate().unwrap();
    let the_ca = ca("popnet test CA");
    box_cert(&the_ca, d, "m");
    box_cert(&the_ca, d, "c");
    let ports = (port(), port());
    let v1 = d.join("v1.toml");
    std::fs::write(
        &v1,
        sign_config(&config(1, &admin, Some(&the_ca), d, ports), &admin),
    )
    .unwrap();
    let m = start(d, "m", &v1, Vec::new());
    let c = start(d, "c", &v1, Vec::new());

    // popctl's side: TLS to the master (no certificate of its own); m passes PREPARE
    // and COMMIT to c over TLS with its box certificate.
    let v2 = config(2, &admin, Some(&the_ca), d, ports);
    let report = sign_and_push(&v2, &admin, &PushOptions::default()).expect("push starts");
    assert!(report.complete(), "{report:#?}");
    assert_eq!(report.decision.len(), 2, "{report:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status().running.version != 2 || m.status().running.version != 2 {
        assert!(Instant::now() < deadline, "c runs {:?}", c.status().running);
        std::thread::sleep(Duration::from_millis(50));
    }

    let cfg = Config::from_toml(&v2, "v2").unwrap();
    // Plain TCP, and TLS without a box certificate: refused, naming why.
    for (what, tls) in [
        ("plain TCP", None),
        (
            "TLS without a certificate",
            Tls::from_config(&cfg, None).unwrap(),
        ),
    ] {
        match fetch(tls.as_ref(), ports.0) {
            Err(CallError::Refused { message, .. }) => {
                assert!(
                    message.contains("requires TLS with a box certificate"),
                    "{what}: {message}"
                )
            }
            other => panic!("{what}: the config was handed out: {other:?}"),
        }
    }
    // With box c's certificate: the running config.
    let as_c = Tls::from_config(&cfg, Some("c")).unwrap();
    match fetch(as_c.as_ref(), ports.0) {
        Ok(Response::Config { text }) => assert!(text.contains("version = 2\n"), "{text}"),
        other => panic!("box c was refused: {other:?}"),
    }

    // A certificate from another CA is no box's: the handshake fails.
    let other = ca("somebody else's CA");
    let odir = d.join("other");
    std::fs::create_dir_all(&odir).unwrap();
    box_cert(&other, &odir, "c");
    let forged = config(2, &admin, Some(&the_ca), &odir, ports);
    let forged = Config::from_toml(&forged, "forged").unwrap();
    let as_forged = Tls::from_config(&forged, Some("c")).unwrap();
    assert!(
        fetch(as_forged.as_ref(), ports.0).is_err(),
        "a certificate of another CA was accepted"
    );
    // And a client trusting only the other CA does not accept m's certificate.
    let wrong_ca = config(2, &admin, Some(&other), &odir, ports);
    let wrong_ca = Config::from_toml(&wrong_ca, "wrong-ca").unwrap();
    let trusting_other = Tls::from_config(&wrong_ca, Some("c")).unwrap();
    assert!(
        fetch(trusting_other.as_ref(), ports.0).is_err(),
        "m's certificate was accepted by a client of another CA"
    );
    m.stop();
    c.stop();
}

#[test]
fn hup_pidfiles_get_sighup_on_every_switch_and_a_bad_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let admin = AdminKey::generate().unwrap();
    let ports = (port(), port());
    let v1 = d.join("v1.toml");
    std::fs::write(&v1, sign_config(&config(1, &admin, None, d, ports), &admin)).unwrap();
    // A process that a SIGHUP ends, and a pidfile that names nothing.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pidfile = d.join("sleeper.pid");
    std::fs::write(&pidfile, format!("{}\n", sleeper.id())).unwrap();
    let broken = d.join("broken.pid");
    std::fs::write(&broken, "not a pid").unwrap();
    let m = start(d, "m", &v1, vec![pidfile, broken.clone()]);
    let c = start(d, "c", &v1, Vec::new());
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "starting is not a switch"
    );
    let report = sign_and_push(
        &config(2, &admin, None, d, ports),
        &admin,
        &PushOptions::default(),
    )
    .unwrap();
    assert!(report.complete(), "{report:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sleeper.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no SIGHUP within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(1), "ended by SIGHUP: {status:?}");
    let said = serde_json::to_string(&m.status()).unwrap();
    assert!(
        said.contains("broken.pid") && said.contains("is not a pid"),
        "the bad pidfile is reported: {said}"
    );
    m.stop();
    c.stop();
}
