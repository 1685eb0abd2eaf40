//! What a probe checks, from the config: every POP cache and every customer origin, with the address and check of each.
//!
//! * A POP cache (`[pops.cache]`, server id = the POP name): its own `check`, else
//!   `probes.cache_check`. Address: its first `listen` address; when that is a wildcard
//!   (0.0.0.0, ::), each of its `addresses` on the listen port.
//! * A customer origin (`[[customers.origins]]`, id `customer/origin`): its `check`,
//!   else a TCP connect; every one of its `addresses` on its `port`.
//!
//! A check's `port` replaces the service port. `kind = "none"` targets are not probed.

use std::net::SocketAddr;

use popnet_config::{Check, Config, origin_server_id, pop_server_id};

use crate::check::{CheckError, CheckSpec};
use crate::engine::EngineTarget;

/// A check of the config that cannot be run, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {error}")]
pub struct TargetError {
    pub place: String,
    pub error: CheckError,
}

/// Every service target of the network, in config order (POP caches, then origins).
pub fn service_targets(cfg: &Config) -> Result<Vec<EngineTarget>, TargetError> {
    let mut out = Vec::new();
    for (i, pop) in cfg.pops.iter().enumerate() {
        let Some(cache) = &pop.cache else { continue };
        let Some(first) = cache.listen.first() else {
            continue;
        };
        let check = cache.check.as_ref().unwrap_or(&cfg.probes.cache_check);
        let place = if cache.check.is_some() {
            format!("pops[{i}].cache.check")
        } else {
            "probes.cache_check".to_string()
        };
        let port = check.port.unwrap_or(first.port());
        let addrs: Vec<SocketAddr> = if first.ip().is_unspecified() {
            cache
                .addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        } else {
            vec![SocketAddr::new(first.ip(), port)]
        };
        push(&mut out, pop_server_id(&pop.name), addrs, check, place)?;
    }
    let tcp = Check::default();
    for (ci, c) in cfg.customers.iter().enumerate() {
        for (oi, o) in c.origins.iter().enumerate() {
            let check = o.check.as_ref().unwrap_or(&tcp);
            let port = check.port.unwrap_or(o.port);
            let addrs = o
                .addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect();
            push(
                &mut out,
                origin_server_id(&c.name, &o.name),
                addrs,
                check,
                format!("customers[{ci}].origins[{oi}].check"),
            )?;
        }
    }
    Ok(out)
}

fn push(
    out: &mut Vec<EngineTarget>,
    id: String,
    addrs: Vec<SocketAddr>,
    check: &Check,
    place: String,
) -> Result<(), TargetError> {
    let spec = CheckSpec::from_config(check).map_err(|error| TargetError { place, error })?;
    if let Some(spec) = spec
        && !addrs.is_empty()
    {
        out.push(EngineTarget { id, addrs, spec });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_probes_its_cache_and_both_origins() {
        let t = service_targets(&Config::demo()).unwrap();
        let got: Vec<(String, Vec<String>, &str)> = t
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.addrs.iter().map(ToString::to_string).collect(),
                    t.spec.kind(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("local".into(), vec!["127.0.0.1:8080".into()], "tcp"),
                (
                    "demo/origin-a".into(),
                    vec!["127.0.0.1:8081".into(), "[::1]:8081".into()],
                    "tcp"
                ),
                ("demo/origin-b".into(), vec!["127.0.0.2:8081".into()], "tcp"),
            ]
        );
    }
}
