//! Validation of the log servers and `[logs]`: every mistake named with its place and what to do.

use popnet_config::{Config, ConfigError};

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml(text, "test.toml") {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        Err(other) => panic!("expected semantic problems, got: {other}"),
    }
}

/// The demo config without its log server, checked to be so.
fn demo_without_logs() -> String {
    let text = popnet_config::demo_without_logs();
    assert!(!text.contains("[logs]") && !text.contains("log_server"));
    text
}

fn has(ps: &[String], path: &str, text: &str) {
    assert!(
        ps.iter().any(|p| p.starts_with(path) && p.contains(text)),
        "no problem at {path} saying {text:?} in {ps:#?}"
    );
}

#[test]
fn log_server_mistakes_are_named() {
    let text = demo_without_logs()
        + r#"
[logs]
batch_records = 0
batch_interval = "1ms"
spool_max_bytes = 10

[[log_servers]]
name = "a"
address = "0.0.0.0:5400"
customers = ["demo"]
minute_retention = "5m"

[[log_servers]]
name = "b"
address = "127.0.0.1:5400"
customers = ["demo"]
"#;
    let ps = problems(&text);
    has(&ps, "logs.key", "openssl rand -hex 32");
    has(
        &ps,
        "log_servers[1].customers[0]",
        "already kept by log_servers[0]",
    );
    has(
        &ps,
        "log_servers[0].address",
        "not an address senders can connect to",
    );
    has(&ps, "log_servers[0].minute_retention", "at least an hour");
    has(&ps, "logs.batch_records", "use 1 to 100000");
    has(&ps, "logs.batch_interval", "between 10 ms and 5 minutes");
    has(&ps, "logs.spool_max_bytes", "at least 1048576");
}

#[test]
fn the_demo_has_a_log_server_and_loads_without_it() {
    let demo = Config::demo();
    assert_eq!(demo.pops[0].log_server.as_deref(), Some("main"));
    assert_eq!(demo.log_servers.len(), 1);
    assert_eq!(demo.log_servers[0].customers, vec!["demo".to_string()]);
    let bare = Config::from_toml(&demo_without_logs(), "bare").unwrap();
    assert!(bare.log_servers.is_empty() && bare.logs.key.is_none());
    assert_eq!(bare.pops[0].log_server, None);
}

#[test]
fn a_valid_log_section_loads() {
    let text = demo_without_logs()
        + r#"
[logs]
key = "00112233445566778899aabbccddeeff"
batch_interval = "200ms"

[[log_servers]]
name = "main"
address = "127.0.0.1:5400"
customers = ["demo"]
raw_retention = "30days"
"#;
    let cfg = Config::from_toml(&text, "test.toml").unwrap();
    let l = &cfg.log_servers[0];
    assert_eq!(l.admin, "127.0.0.1:5480".parse().unwrap());
    assert_eq!(l.raw_retention.as_secs(), 30 * 86_400);
    assert_eq!(cfg.logs.batch_interval.as_millis(), 200);
    assert_eq!(cfg.logs.batch_records, 5000);
}

#[test]
fn the_origin_form_needs_a_key_a_sane_limit_and_a_configd_tree() {
    let base = popnet_config::DEMO_TOML.replace(
        "data_dir = \"/tmp/popnet-demo/logd\"\n",
        "data_dir = \"/tmp/popnet-demo/logd\"\n[log_servers.origin_form]\nadmin_key = \"\"\nmax_origins = 0\n",
    );
    assert_ne!(
        base,
        popnet_config::DEMO_TOML,
        "the demo's log server moved"
    );
    let ps = problems(&base);
    has(&ps, "log_servers[0].origin_form.admin_key", "path is empty");
    has(
        &ps,
        "log_servers[0].origin_form.max_origins",
        "out of range",
    );
    has(&ps, "log_servers[0].origin_form", "no [configd] tree");
    // With a key and a configd tree, the form has nothing to say (the tree's own
    // problems, no admin and no box for the POP, are another section's).
    let good = popnet_config::DEMO_TOML.replace(
        "data_dir = \"/tmp/popnet-demo/logd\"\n",
        "data_dir = \"/tmp/popnet-demo/logd\"\n[log_servers.origin_form]\nadmin_key = \"/etc/popnet/netview.pem\"\n",
    ) + "\n[configd]\nmasters = [\"m\"]\n[[configd.boxes]]\nname = \"m\"\naddress = \"127.0.0.1:5400\"\n";
    let ps = problems(&good);
    assert!(!ps.iter().any(|p| p.contains("origin_form")), "{ps:#?}");
    has(&ps, "network.admins", "names no admin");
}
