//! Loading and validating configs: the shipped examples, and every kind of mistake a user makes.

use popnet_config::{Config, ConfigError, DomainKind};

const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/single-pop.toml",
        include_str!("../../examples/single-pop.toml"),
    ),
    (
        "examples/three-pop.toml",
        include_str!("../../examples/three-pop.toml"),
    ),
];

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml") {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => match &e {
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected semantic problems, got: {other}"),
        },
    }
}

fn syntax_error(text: &str) -> (String, usize, String) {
    match Config::from_toml(text, "test.toml") {
        Err(ConfigError::Syntax {
            path,
            line,
            message,
            ..
        }) => (path, line, message),
        Err(other) => panic!("expected a syntax error, got: {other}"),
        Ok(_) => panic!("config was accepted"),
    }
}

/// The demo config with `from` replaced by `to` (which must occur exactly once).
fn demo_with(from: &str, to: &str) -> String {
    let demo = popnet_config::DEMO_TOML;
    assert_eq!(
        demo.matches(from).count(),
        1,
        "{from:?} must occur once in the demo"
    );
    demo.replace(from, to)
}

#[test]
fn shipped_examples_are_valid() {
    for (name, text) in EXAMPLES {
        if let Err(e) = Config::from_toml(text, name) {
            panic!("{name} is invalid:\n{e}");
        }
    }
}

#[test]
fn demo_has_the_names_the_readme_promises() {
    let cfg = Config::demo();
    let demo = cfg.customer("demo").expect("demo customer");
    let www = demo
        .domains
        .iter()
        .find(|d| d.name == "www.demo.example")
        .expect("www");
    assert_eq!(www.kind, DomainKind::Dynamic);
    let st = demo
        .domains
        .iter()
        .find(|d| d.name == "static.demo.example")
        .expect("static");
    assert_eq!(st.kind, DomainKind::Static);
    let dns = cfg.pops[0].dns.as_ref().expect("dns service");
    assert_eq!(dns.listen[0].to_string(), "127.0.0.1:5353");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
[network]
name = "x"
version = 1
zone = "popnet.example"

[probes]
report_key = "00112233445566778899aabbccddeeff"

[[views]]
name = "eu"
prefixes = ["198.51.100.7/24"]

[[views]]
name = "eu"
prefixes = ["198.51.100.0/24"]

[[pops]]
name = "Bad_Name"
region = "eu"
[pops.dns]
listen = ["192.0.2.1:53"]
reports = "192.0.2.1:5354"
admin = "127.0.0.1:5380"

[[customers]]
name = "a"
zones = ["a.example"]
[[customers.origins]]
name = "o1"
addresses = ["203.0.113.1"]

[[customers]]
name = "b"
zones = ["b.example"]
[[customers.domains]]
name = "www.b.example"
kind = "dynamic"
[customers.domains.policy]
answers = 0
[[customers.domains]]
name = "img.elsewhere.example"
kind = "static"
origins = ["nope"]
"#;
    let got = problems(text);
    let has = |path: &str, words: &str| {
        assert!(
            got.iter()
                .any(|p| p.starts_with(&format!("{path}: ")) && p.contains(words)),
            "no problem at {path} mentioning {words:?}; got:\n{}",
            got.join("\n")
        )
    };
    has("views[0].prefixes[0]", "write 198.51.100.0/24");
    has("views[1].name", "defined twice");
    has("views[1].prefixes[0]", "also a prefix of views[0]");
    has("pops[0].name", "lowercase");
    has("customers[1].domains[0].origins", "no origin servers");
    has("customers[1].domains[0].policy.answers", "use 1 to 16");
    has("customers[1].domains[1].name", "not inside any zone");
    has(
        "customers[1].domains[1].origins[0]",
        "no origin named \"nope\"",
    );
    has("customers[1].domains[1].pops", "no POP cache serves");
    // Each problem says what to do after the semicolon.
    for p in &got {
        let (_, fix) = p
            .split_once("; ")
            .unwrap_or_else(|| panic!("no fix in {p:?}"));
        assert!(!fix.trim().is_empty(), "empty fix in {p:?}");
    }
}

#[test]
fn record_conflicts_are_found() {
    let got = problems(&demo_with(
        "[[customers.records]]\nname = \"demo.example\"\ntype = \"TXT\"",
        "[[customers.records]]\nname = \"www.demo.example\"\ntype = \"A\"\nvalue = \"192.0.2.1\"\n\n\
         [[customers.records]]\nname = \"demo.example\"\ntype = \"CNAME\"\nvalue = \"x.example\"\n\n\
         [[customers.records]]\nname = \"demo.example\"\ntype = \"TXT\"",
    ));
    let joined = got.join("\n");
    assert!(
        joined.contains("customers[0].records[0]: www.demo.example. is a balanced domain"),
        "{joined}"
    );
    assert!(
        joined.contains("customers[0].records[1]: a CNAME cannot stand at a zone apex"),
        "{joined}"
    );
    assert!(joined.contains("has a CNAME and other records"), "{joined}");
}

#[test]
fn bad_record_values_name_the_record() {
    let got = problems(&demo_with(
        "type = \"TXT\"\nvalue = \"popnet demo customer\"",
        "type = \"SRV\"\nvalue = \"0 0 80 x.example\"",
    ));
    assert!(
        got.iter().any(|p| p
            .starts_with("customers[0].records[0].value: record type \"SRV\" is not supported")),
        "{got:?}"
    );
    let got = problems(&demo_with(
        "type = \"TXT\"\nvalue = \"popnet demo customer\"",
        "type = \"A\"\nvalue = \"192.0.2.300\"",
    ));
    assert!(
        got.iter().any(|p| p
            .starts_with("customers[0].records[0].value: \"192.0.2.300\" is not an IPv4 address")),
        "{got:?}"
    );
}

#[test]
fn wrong_types_and_unknown_fields_are_syntax_errors_with_paths() {
    let (path, line, msg) = syntax_error(&demo_with("ttl = 20", "ttl = \"twenty\""));
    assert_eq!(path, "customers[0].domains[0].policy.ttl");
    assert!(line > 1, "line {line}");
    assert!(msg.contains("expected u32"), "{msg}");

    let (path, _, msg) = syntax_error(&demo_with("ttl = 20", "tll = 20"));
    assert_eq!(path, "customers[0].domains[0].policy.tll");
    assert!(msg.contains("unknown field `tll`"), "{msg}");

    let (path, _, msg) = syntax_error(&demo_with(
        "interval = \"1s\"",
        "interval = \"1 fortnight-ish\"",
    ));
    assert_eq!(path, "probes.interval");
    assert!(msg.contains("write it like \"500ms\""), "{msg}");

    let (path, _, msg) = syntax_error(&demo_with(
        "report_key = \"b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5\"",
        "report_key = \"abcd\"",
    ));
    assert_eq!(path, "probes.report_key");
    assert!(msg.contains("too short"), "{msg}");

    let (path, _, msg) = syntax_error(&demo_with(
        "listen = [\"127.0.0.1:5353\"]",
        "listen = [\"127.0.0.1:99999\"]",
    ));
    assert_eq!(path, "pops[0].dns.listen[0]");
    assert!(msg.contains("socket address"), "{msg}");

    let (_, line, _) = syntax_error("[network\nname = 1");
    assert_eq!(line, 1);
}

#[test]
fn secrets_are_not_printed() {
    let cfg = Config::demo();
    let dbg = format!("{:?}", cfg.probes);
    assert!(!dbg.contains("b931d3d7"), "{dbg}");
}

#[test]
fn probe_settings_are_checked() {
    let p = problems(&demo_with(
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\n",
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\nload_from = []\n",
    ));
    assert!(
        p.iter()
            .any(|x| x.starts_with("pops[0].probe.load_from: no load source")),
        "{p:?}"
    );
    let (_, _, msg) = syntax_error(&demo_with(
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\n",
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\nload_from = [\"disk\"]\n",
    ));
    assert!(msg.contains("unknown variant `disk`"), "{msg}");
    let ok = demo_with(
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\n",
        "[pops.probe]\nlisten = \"127.0.0.1:5355\"\nload_from = [\"connections\"]\n",
    );
    let cfg = Config::from_toml(&ok, "t").unwrap();
    assert_eq!(
        cfg.pops[0].probe.as_ref().unwrap().load_from,
        [popnet_config::LoadSource::Connections]
    );
    let p = problems(&demo_with(
        "recovery = \"2s\"",
        "recovery = \"2s\"\nresolver_refresh = \"10s\"\nresolver_stale_after = \"5s\"\noverload_response = \"1ms\"",
    ));
    for want in [
        "probes.resolver_stale_after: must be longer than probes.resolver_refresh",
        "probes.overload_response: must be at least 10ms",
    ] {
        assert!(p.iter().any(|x| x.starts_with(want)), "{want}: {p:?}");
    }
}

#[test]
fn a_probe_admin_listener_off_loopback_needs_a_token() {
    let text = demo_with("admin = \"127.0.0.1:5382\"", "admin = \"192.0.2.1:5382\"");
    let ps = problems(&text);
    assert!(
        ps.iter().any(|p| p.starts_with("pops[0].probe.admin_token")
            && p.contains("192.0.2.1:5382 is not on loopback")
            && p.contains("openssl rand -hex 32")),
        "{ps:#?}"
    );
    let text = demo_with(
        "admin = \"127.0.0.1:5382\"",
        "admin = \"192.0.2.1:5382\"\nadmin_token = \"00112233445566778899aabbccddeeff\"",
    );
    let cfg = Config::from_toml(&text, "test.toml").unwrap();
    let probe = cfg.pops[0].probe.as_ref().unwrap();
    assert_eq!(probe.admin, Some("192.0.2.1:5382".parse().unwrap()));
    assert!(probe.admin_token.is_some());
}
