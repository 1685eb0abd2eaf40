//! Config distribution across a real link: the link to a box is cut (veth down) between PREPARE and COMMIT, then restored, and the box comes to the committed version from its parent.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use configd::push::{Push, PushOptions};
use configd::wire::Outcome;
use configd::{AdminKey, sign_config};
use hwtests::netns::{Guard, Lab, bin, in_netns};
use hwtests::privileged;

/// Generous: CI shares two cores with other builds.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Box `m` (with POP local) and `s` in the server namespace, `far` in the client
/// namespace behind the veth; `m` controls both.
fn config(version: u32, admin: &AdminKey, m: SocketAddr, s: SocketAddr, far: SocketAddr) -> String {
    let text = popnet_config::DEMO_TOML
        .replacen("version = 1\n", &format!("version = {version}\n"), 1)
        .replacen(
            "[probes]\n",
            &format!(
                "[[network.admins]]\nname = \"alice\"\nkey = \"{}\"\n\n[probes]\n",
                admin.public_b64()
            ),
            1,
        );
    let text = format!(
        r#"{text}
[configd]
masters = ["m"]
timeout = "3s"
recovery_interval = "300ms"

[[configd.boxes]]
name = "m"
address = "{m}"
pop = "local"
controls = ["s", "far"]

[[configd.boxes]]
name = "s"
address = "{s}"

[[configd.boxes]]
name = "far"
address = "{far}"
"#
    );
    sign_config(&text, admin)
}

fn stored_version(state: &Path) -> Option<u32> {
    let t = std::fs::read_to_string(state.join("running.toml")).ok()?;
    popnet_config::Config::from_toml(&t, "stored")
        .ok()
        .map(|c| c.network.version)
}

/// A state directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn configd(lab: &Lab, ns: &str, name: &str, dir: &Path, bootstrap: &Path) -> Guard {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Guard(
        lab.cmd(ns, bin("popnet").to_str().unwrap())
            .args(["--log", "info", "configd", "--name", name, "--state"])
            .arg(dir.join(format!("state-{name}")))
            .arg("--bootstrap")
            .arg(bootstrap)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn popnet configd"),
    )
}

fn listens(ns: &str, addr: SocketAddr) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

#[test]
fn a_link_cut_mid_commit_then_restored_brings_the_box_to_the_committed_version() {
    if !privileged("a_link_cut_mid_commit_then_restored_brings_the_box_to_the_committed_version") {
        return;
    }
    let lab = Lab::new();
    let dir = Dir(std::env::temp_dir().join(format!("popnet-configd-hw-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let admin = AdminKey::generate().unwrap();
    let m: SocketAddr = "192.0.2.1:5390".parse().unwrap();
    let s: SocketAddr = "192.0.2.1:5391".parse().unwrap();
    let far: SocketAddr = "198.51.100.7:5390".parse().unwrap();
    let v1 = dir.0.join("v1.toml");
    std::fs::write(&v1, config(1, &admin, m, s, far)).unwrap();
    let v2 = config(2, &admin, m, s, far);

    let _m = configd(&lab, &lab.server, "m", &dir.0, &v1);
    let _s = configd(&lab, &lab.server, "s", &dir.0, &v1);
    let _far = configd(&lab, &lab.client, "far", &dir.0, &v1);
    for (ns, addr) in [(&lab.server, m), (&lab.server, s), (&lab.client, far)] {
        wait_for(&format!("configd on {addr}"), || listens(ns, addr));
    }

    // PREPARE reaches every box across the link; then the link goes down and COMMIT runs.
    let (server_ns, client_ns, client_if) = (
        lab.server.clone(),
        lab.client.clone(),
        lab.client_if.clone(),
    );
    let (prepared, decision) = in_netns(&server_ns, move || {
        let push = Push::new(
            v2,
            &admin,
            &PushOptions {
                timeout: Some(Duration::from_secs(6)),
            },
        )
        .unwrap();
        let prepared = push.prepare().unwrap();
        hwtests::netns::run(&["ip", "-n", &client_ns, "link", "set", &client_if, "down"]);
        (prepared, push.commit().unwrap())
    });
    assert!(prepared.all_ok(), "{:?}", prepared.boxes);
    let outcome = |name: &str| {
        decision
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no report for {name}: {decision:?}"))
            .outcome
    };
    assert_eq!(outcome("m"), Outcome::Ok, "{decision:?}");
    assert_eq!(outcome("s"), Outcome::Ok, "{decision:?}");
    assert_eq!(outcome("far"), Outcome::Unreached, "{decision:?}");
    let far_state = dir.0.join("state-far");
    assert_eq!(stored_version(&dir.0.join("state-m")), Some(2));
    assert_eq!(
        stored_version(&far_state),
        Some(1),
        "far cannot have switched"
    );
    // Cut off, it stays on version 1 (it holds 2 only as pending).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stored_version(&far_state), Some(1));

    // The link comes back (with the route the link-down removed).
    lab.ip(&lab.client, &["link", "set", &lab.client_if, "up"]);
    lab.ip(
        &lab.client,
        &[
            "route",
            "replace",
            "192.0.2.0/24",
            "dev",
            &lab.client_if,
            "src",
            "198.51.100.7",
        ],
    );
    wait_for("far to fetch version 2 from its parent", || {
        stored_version(&far_state) == Some(2)
    });
    let log = std::fs::read_to_string(dir.0.join("far.log")).unwrap_or_default();
    assert!(log.contains("switched"), "{log}");
    // Every box runs version 2 with nothing pending, as `popctl config status` asks it
    // (from the server namespace).
    let cfg = popnet_config::Config::load(&v1).unwrap();
    let boxes = in_netns(&lab.server, move || {
        configd::push::status(&cfg, Some(Duration::from_secs(3))).unwrap()
    });
    assert_eq!(boxes.len(), 3, "{boxes:?}");
    for b in &boxes {
        let st = b.status.as_ref().unwrap_or_else(|| panic!("{b:?}"));
        assert_eq!(st.running.version, 2, "{b:?}");
        assert!(st.pending.is_none(), "{b:?}");
    }
}
