//! Validation of `[configd]`: the push tree, the boxes, TLS, with the path and fix of every problem.

use popnet_config::{Config, ConfigError};

const ADMIN: &str = "[[network.admins]]\nname = \"alice\"\nkey = \"XFyDqNPsTMrMB7l1sxAOrDjLqmEvvQBUJ7WhXhF3dFE=\"\n\n[probes]\n";

fn with(configd: &str, admins: bool) -> String {
    let mut text = popnet_config::DEMO_TOML.to_string();
    if admins {
        text = text.replacen("[probes]\n", ADMIN, 1);
    }
    format!("{text}\n{configd}")
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml") {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        Err(other) => panic!("expected semantic problems, got: {other}"),
    }
}

fn has(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem contains {needle:?}:\n{}",
        problems.join("\n")
    );
}

const TREE: &str = r#"
[configd]
masters = ["m1"]
timeout = "3s"

[[configd.boxes]]
name = "m1"
address = "192.0.2.1:5390"
pop = "local"
controls = ["c1", "c2"]

[[configd.boxes]]
name = "c1"
address = "192.0.2.2:5390"
controls = ["g1"]

[[configd.boxes]]
name = "c2"
address = "192.0.2.3:5390"

[[configd.boxes]]
name = "g1"
address = "192.0.2.4:5390"
"#;

#[test]
fn a_tree_is_read_with_its_parents_children_and_subtrees() {
    let cfg = Config::from_toml(&with(TREE, true), "t").unwrap();
    let d = cfg.configd.as_ref().unwrap();
    let names = |v: Vec<&popnet_config::ConfigBox>| -> Vec<String> {
        v.into_iter().map(|b| b.name.clone()).collect()
    };
    assert_eq!(names(d.master_boxes()), ["m1"]);
    assert_eq!(names(d.children("m1")), ["c1", "c2"]);
    assert_eq!(d.parent("g1").unwrap().name, "c1");
    assert!(d.parent("m1").is_none());
    assert_eq!(names(d.ancestors("g1")), ["c1", "m1"]);
    assert_eq!(names(d.subtree("m1")), ["m1", "c1", "g1", "c2"]);
    assert_eq!(names(d.subtree("c1")), ["c1", "g1"]);
    assert_eq!(d.box_of_pop("local").unwrap().name, "m1");
    assert_eq!(d.timeout, std::time::Duration::from_secs(3));
    assert_eq!(cfg.configd_tls_name("g1"), "configd.g1.popnet.example");
}

#[test]
fn tree_mistakes_are_named() {
    let p = problems(&with(TREE, false));
    has(
        &p,
        "network.admins: the config is distributed by [configd] but names no admin",
    );

    let loop_ = TREE
        .replace("masters = [\"m1\"]", "masters = [\"m1\", \"zz\"]")
        .replace("controls = [\"g1\"]", "controls = [\"g1\", \"c1\", \"m1\"]")
        .replace(
            "address = \"192.0.2.3:5390\"",
            "address = \"192.0.2.2:5390\"\ncontrols = [\"g1\"]",
        );
    let p = problems(&with(&loop_, true));
    has(&p, "configd.masters[1]: no box is named \"zz\"");
    has(
        &p,
        "configd.boxes[1].controls[1]: a box cannot control itself",
    );
    has(&p, "configd.boxes[1].controls[2]: \"m1\" is a master");
    has(
        &p,
        "configd.boxes[2].address: 192.0.2.2:5390 is also the address of configd.boxes[1]",
    );
    has(
        &p,
        "configd.boxes[2].controls[0]: \"g1\" is already controlled by \"c1\"",
    );

    let orphan = TREE.replace("controls = [\"c1\", \"c2\"]", "controls = [\"c1\"]");
    let p = problems(&with(&orphan, true));
    has(&p, "configd.boxes[2]: box \"c2\" is below no master");

    let bad = TREE
        .replace("pop = \"local\"", "pop = \"nowhere\"")
        .replace("192.0.2.4:5390", "0.0.0.0:5390")
        .replace("timeout = \"3s\"", "timeout = \"20m\"");
    let p = problems(&with(&bad, true));
    has(&p, "configd.boxes[0].pop: no POP is named \"nowhere\"");
    has(&p, "pops[0]: POP \"local\" is on no box of [configd]");
    has(
        &p,
        "configd.boxes[3].address: 0.0.0.0:5390 cannot be connected to",
    );
    has(&p, "configd.timeout: must be from 100ms to 10m");
}

#[test]
fn tls_needs_a_ca_and_every_box_its_certificate() {
    let tls = format!(
        "{TREE}\n[configd.tls]\nca = \"\"\"\n-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n\"\"\"\n"
    );
    let p = problems(&with(&tls, true));
    has(&p, "configd.tls.ca: certificate 1 is not base64");
    has(
        &p,
        "configd.boxes[0]: with [configd.tls] every box needs tls_cert and tls_key",
    );
    has(&p, "configd.m1.popnet.example");

    let stray = TREE.replacen(
        "pop = \"local\"",
        "pop = \"local\"\ntls_cert = \"/etc/popnet/m1.crt\"\ntls_key = \"/etc/popnet/m1.key\"",
        1,
    );
    let p = problems(&with(&stray, true));
    has(
        &p,
        "configd.boxes[0]: tls_cert and tls_key are set but there is no [configd.tls]",
    );
}
