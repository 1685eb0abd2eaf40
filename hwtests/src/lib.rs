//! Support for tests that need root: packet frames for BPF_PROG_TEST_RUN, network namespaces with veth pairs or a delaying router, the answer table the server would build.
//!
//! Tests here run as root in CI (`.ci/run` sets `POPNET_HWTESTS=1`, which turns a missing
//! privilege into a failure). Run elsewhere without root, each test says it is skipped.

pub mod delaynet;
pub mod frames;
pub mod netns;
pub mod poplab;

use std::sync::Arc;

use dns_fastpath::answer::AnswerTable;
use dns_fastpath::catalog::Catalog;
use dns_fastpath::metrics::{MetricsTable, unix_ms};
use dns_fastpath::selector::Selector;
use popnet_config::Config;

/// True if this process may run privileged tests. Without root: panics when
/// `POPNET_HWTESTS=1` (CI), otherwise prints why the test is skipped.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("POPNET_HWTESTS").is_ok_and(|v| v == "1") {
        panic!("{test}: needs root (CI runs hwtests as root with POPNET_HWTESTS=1)");
    }
    eprintln!("{test}: skipped, needs root (set POPNET_HWTESTS=1 to make this a failure)");
    false
}

/// The answer table the server builds for `cfg` on an idle network.
pub fn idle_table(cfg: &Config) -> AnswerTable {
    let cat = Arc::new(Catalog::compile(cfg).expect("config compiles"));
    let metrics = MetricsTable::new(
        cfg.probes.report_key.as_bytes(),
        5_000,
        cat.servers.iter().map(|s| s.id.clone()),
        Vec::new(),
    );
    let mut sel = Selector::new(&cat, cfg.probes.recovery);
    sel.reselect(&cat, &metrics, std::time::Instant::now(), unix_ms());
    AnswerTable::build(cat, sel.selections().clone(), Default::default(), 1)
}

/// A network for XDP tests: two views (documentation ranges), two origins, names of
/// every kind. The DNS server listens on 192.0.2.1 / 2001:db8::1 port 53.
pub const XDP_CONFIG: &str = r#"
[network]
name = "xdp-test"
version = 3
zone = "popnet.test.example"

[probes]
report_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
stale_after = "5s"

[[views]]
name = "east"
region = "east"
prefixes = ["198.51.100.0/25", "2001:db8:100::/48"]

[[views]]
name = "west"
region = "west"
prefixes = ["198.51.100.128/25", "203.0.113.0/24", "2001:db8:200::/48"]

[[pops]]
name = "pop1"
region = "east"
[pops.dns]
listen = ["192.0.2.1:53", "[2001:db8::1]:53"]
reports = "127.0.0.1:5354"
admin = "127.0.0.1:5380"
[pops.cache]
addresses = ["192.0.2.10", "2001:db8::10"]
listen = ["192.0.2.10:80"]

[[customers]]
name = "shop"
zones = ["shop.example"]

[[customers.origins]]
name = "east"
addresses = ["203.0.113.10", "2001:db8:1::10"]
region = "east"

[[customers.origins]]
name = "west"
addresses = ["203.0.113.20", "2001:db8:2::20"]
region = "west"

[[customers.domains]]
name = "www.shop.example"
kind = "dynamic"
[customers.domains.policy]
ttl = 30

[[customers.domains]]
name = "img.shop.example"
kind = "static"

[[customers.domains]]
name = "pair.shop.example"
kind = "dynamic"
[customers.domains.policy]
answers = 2

[[customers.records]]
name = "shop.example"
type = "TXT"
value = "v=spf1 -all"

[[customers.records]]
name = "shop.example"
type = "MX"
value = "10 mail.shop.example"

[[customers.records]]
name = "mail.shop.example"
type = "A"
value = "203.0.113.25"

[[customers.records]]
name = "static.shop.example"
type = "CNAME"
value = "img.shop.example"

[[customers.records]]
name = "big.shop.example"
type = "TXT"
value = "BIG"
"#;

/// [`XDP_CONFIG`] with a TXT record of `n` bytes at big.shop.example.
pub fn xdp_config_with_big_txt(n: usize) -> String {
    XDP_CONFIG.replace("value = \"BIG\"", &format!("value = \"{}\"", "t".repeat(n)))
}
