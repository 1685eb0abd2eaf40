//! Changes to a config's text that keep its comments and layout: a customer's origin servers added or removed, `network.version` raised.
//!
//! NetView's origin form uses these: it edits the running config's text, and the result
//! (checked here by [`Config::from_toml`], so every problem comes back with its path)
//! is signed and pushed. Only the customer's own tables are touched: its
//! `[[customers.origins]]` (written as tables or as an inline array) and the explicit
//! `origins` lists of its domains.

use std::net::IpAddr;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use crate::{Config, ConfigError};

/// An origin server to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrigin {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub region: Option<String>,
    pub weight: f64,
    pub check: NewCheck,
}

/// How the probes check a new origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewCheck {
    /// No `check` table: the probes' default.
    Default,
    /// TCP connect to the origin's port.
    Tcp,
    /// HTTP GET of a path, 200 expected.
    Http { path: String },
}

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    #[error("the running config is not TOML ({0}); fix it with `popctl config check`")]
    Syntax(String),
    #[error("the config has no customer {0:?}")]
    NoCustomer(String),
    #[error("customer {customer:?} already has an origin named {origin:?}; choose another name")]
    OriginExists { customer: String, origin: String },
    #[error("customer {customer:?} has no origin named {origin:?}")]
    NoOrigin { customer: String, origin: String },
    #[error("customer {customer:?} has no domain named {domain:?}")]
    NoDomain { customer: String, domain: String },
    #[error("{origin:?} is the only origin of domain {domain:?}; add another origin to it first")]
    LastOrigin { origin: String, domain: String },
    #[error("{0} is not written in a form this editor changes; edit the file by hand")]
    Shape(String),
    #[error("the changed config is not valid: {0}")]
    Invalid(#[source] ConfigError),
}

/// A changed config: its text (unsigned) and what it parses to.
#[derive(Debug)]
pub struct Edited {
    pub text: String,
    pub config: Config,
}

fn parse(text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError::Syntax(e.to_string().trim().replace('\n', " ")))
}

/// Raises `network.version` by one, checks and returns the result.
fn finish(mut doc: DocumentMut, origin: &str) -> Result<Edited, EditError> {
    let version = doc
        .get_mut("network")
        .and_then(|n| n.get_mut("version"))
        .ok_or_else(|| EditError::Shape("network.version".into()))?;
    let v = version
        .as_integer()
        .ok_or_else(|| EditError::Shape("network.version".into()))?;
    let decor = version.as_value().map(|v| v.decor().clone());
    *version = toml_edit::value(v + 1);
    if let (Some(d), Some(v)) = (decor, version.as_value_mut()) {
        *v.decor_mut() = d;
    }
    let text = doc.to_string();
    let config = Config::from_toml(&text, origin).map_err(EditError::Invalid)?;
    Ok(Edited { text, config })
}

/// The `[[customers]]` table named `name`.
fn customer<'d>(doc: &'d mut DocumentMut, name: &str) -> Result<&'d mut Table, EditError> {
    let customers = match doc.get_mut("customers") {
        Some(Item::ArrayOfTables(a)) => a,
        Some(_) => return Err(EditError::Shape("customers".into())),
        None => return Err(EditError::NoCustomer(name.into())),
    };
    customers
        .iter_mut()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
        .ok_or_else(|| EditError::NoCustomer(name.into()))
}

/// The names of the customer's origins, in order.
fn origin_names(c: &Table) -> Result<Vec<String>, EditError> {
    let name = |v: Option<&Item>| v.and_then(Item::as_str).unwrap_or_default().to_string();
    Ok(match c.get("origins") {
        None => Vec::new(),
        Some(Item::ArrayOfTables(a)) => a.iter().map(|t| name(t.get("name"))).collect(),
        Some(Item::Value(Value::Array(a))) => a
            .iter()
            .map(|v| {
                v.as_inline_table()
                    .and_then(|t| t.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect(),
        Some(_) => return Err(EditError::Shape("customers.origins".into())),
    })
}

/// Each domain's explicit `origins` list, by domain name (domains without one are
/// served by every origin of the customer and are not listed).
fn domain_lists(c: &mut Table) -> Result<Vec<(String, &mut Array)>, EditError> {
    let mut out = Vec::new();
    match c.get_mut("domains") {
        None => {}
        Some(Item::ArrayOfTables(a)) => {
            for t in a.iter_mut() {
                let name = t
                    .get("name")
                    .and_then(Item::as_str)
                    .unwrap_or_default()
                    .to_string();
                match t.get_mut("origins") {
                    None => {}
                    Some(Item::Value(Value::Array(list))) => out.push((name, list)),
                    Some(_) => return Err(EditError::Shape("customers.domains.origins".into())),
                }
            }
        }
        Some(Item::Value(Value::Array(a))) => {
            for v in a.iter_mut() {
                let Some(t) = v.as_inline_table_mut() else {
                    return Err(EditError::Shape("customers.domains".into()));
                };
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match t.get_mut("origins") {
                    None => {}
                    Some(Value::Array(list)) => out.push((name, list)),
                    Some(_) => return Err(EditError::Shape("customers.domains.origins".into())),
                }
            }
        }
        Some(_) => return Err(EditError::Shape("customers.domains".into())),
    }
    Ok(out)
}

fn domain_names(c: &Table) -> Vec<String> {
    let of_table = |t: &Table| t.get("name").and_then(Item::as_str).map(str::to_string);
    match c.get("domains") {
        Some(Item::ArrayOfTables(a)) => a.iter().filter_map(of_table).collect(),
        Some(Item::Value(Value::Array(a))) => a
            .iter()
            .filter_map(|v| {
                v.as_inline_table()?
                    .get("name")?
                    .as_str()
                    .map(str::to_string)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The origin as an inline table (the form when the customer writes its origins inline).
fn inline(o: &NewOrigin) -> InlineTable {
    let mut t = InlineTable::new();
    t.insert("name", o.name.as_str().into());
    let mut addrs = Array::new();
    for a in &o.addresses {
        addrs.push(a.to_string());
    }
    t.insert("addresses", Value::Array(addrs));
    t.insert("port", i64::from(o.port).into());
    if let Some(r) = &o.region {
        t.insert("region", r.as_str().into());
    }
    if o.weight != 1.0 {
        t.insert("weight", o.weight.into());
    }
    let mut check = InlineTable::new();
    match &o.check {
        NewCheck::Default => {}
        NewCheck::Tcp => {
            check.insert("kind", "tcp".into());
        }
        NewCheck::Http { path } => {
            check.insert("kind", "http".into());
            check.insert("path", path.as_str().into());
        }
    }
    if !check.is_empty() {
        t.insert("check", Value::InlineTable(check));
    }
    t
}

/// Adds origin `o` to `customer`; domains in `also_serves` that list their origins
/// get it added to their list (the others are served by all origins already).
pub fn add_origin(
    text: &str,
    customer_name: &str,
    o: &NewOrigin,
    also_serves: &[String],
    origin: &str,
) -> Result<Edited, EditError> {
    let mut doc = parse(text)?;
    let c = customer(&mut doc, customer_name)?;
    if origin_names(c)?.iter().any(|n| n == &o.name) {
        return Err(EditError::OriginExists {
            customer: customer_name.into(),
            origin: o.name.clone(),
        });
    }
    let known = domain_names(c);
    if let Some(d) = also_serves.iter().find(|d| !known.contains(d)) {
        return Err(EditError::NoDomain {
            customer: customer_name.into(),
            domain: d.clone(),
        });
    }
    let entry = inline(o);
    match c.get_mut("origins") {
        Some(Item::ArrayOfTables(a)) => a.push(entry.into_table()),
        Some(Item::Value(Value::Array(a))) => a.push(Value::InlineTable(entry)),
        Some(_) => return Err(EditError::Shape("customers.origins".into())),
        None => {
            let mut a = ArrayOfTables::new();
            a.push(entry.into_table());
            c.insert("origins", Item::ArrayOfTables(a));
        }
    }
    for (domain, list) in domain_lists(c)? {
        if also_serves.contains(&domain) && !list.iter().any(|v| v.as_str() == Some(&o.name)) {
            list.push(o.name.as_str());
        }
    }
    finish(doc, origin)
}

/// Removes origin `name` from `customer` and from its domains' lists. Refused when it
/// is the only origin a domain lists.
pub fn remove_origin(
    text: &str,
    customer_name: &str,
    name: &str,
    origin: &str,
) -> Result<Edited, EditError> {
    let mut doc = parse(text)?;
    let c = customer(&mut doc, customer_name)?;
    let Some(i) = origin_names(c)?.iter().position(|n| n == name) else {
        return Err(EditError::NoOrigin {
            customer: customer_name.into(),
            origin: name.into(),
        });
    };
    for (domain, list) in domain_lists(c)? {
        let mine = |v: &Value| v.as_str() == Some(name);
        if list.iter().any(mine) && list.iter().all(mine) {
            return Err(EditError::LastOrigin {
                origin: name.into(),
                domain,
            });
        }
        list.retain(|v| !mine(v));
    }
    match c.get_mut("origins") {
        Some(Item::ArrayOfTables(a)) => {
            a.remove(i);
        }
        Some(Item::Value(Value::Array(a))) => {
            a.remove(i);
        }
        _ => return Err(EditError::Shape("customers.origins".into())),
    }
    finish(doc, origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"# the network
[network]
name = "t"
version = 7 # raised on every change
zone = "popnet.example"

[probes]
report_key = "b931d3d715699ac5770f3adaa5de1107460e972c72dfc63c6498486c5ae09ce5"

[[pops]]
name = "p"
region = "r"
[pops.dns]
listen = ["127.0.0.1:5353"]
reports = "127.0.0.1:5354"
admin = "127.0.0.1:5380"

[[customers]]
name = "a"
zones = ["a.example"]
# our first server
[[customers.origins]]
name = "one"
addresses = ["192.0.2.1"]
[[customers.domains]]
name = "www.a.example"
kind = "dynamic"
[[customers.domains]]
name = "api.a.example"
kind = "dynamic"
origins = ["one"]

[[customers]]
name = "b"
zones = ["b.example"]
origins = [{ name = "one", addresses = ["192.0.2.9"] }]
domains = [{ name = "www.b.example", kind = "dynamic", origins = ["one"] }]
"#;

    fn new(name: &str, addr: &str) -> NewOrigin {
        NewOrigin {
            name: name.into(),
            addresses: vec![addr.parse().unwrap()],
            port: 8080,
            region: Some("r".into()),
            weight: 2.0,
            check: NewCheck::Http {
                path: "/health".into(),
            },
        }
    }

    #[test]
    fn adding_keeps_comments_raises_the_version_and_touches_one_customer() {
        let e = add_origin(
            BASE,
            "a",
            &new("two", "192.0.2.2"),
            &["api.a.example".into()],
            "t",
        )
        .unwrap();
        assert_eq!(e.config.network.version, 8);
        assert!(e.text.contains("# our first server"));
        assert!(
            e.text.contains("version = 8 # raised on every change"),
            "{}",
            e.text
        );
        let a = e.config.customer("a").unwrap();
        assert_eq!(a.origins.len(), 2);
        let two = &a.origins[1];
        assert_eq!(two.name, "two");
        assert_eq!(two.port, 8080);
        assert_eq!(two.weight, 2.0);
        assert_eq!(two.check.as_ref().unwrap().path, "/health");
        let api = a
            .domains
            .iter()
            .find(|d| d.name == "api.a.example")
            .unwrap();
        assert_eq!(api.origins.as_deref().unwrap(), ["one", "two"]);
        // www lists no origins: it is served by all of them without a change.
        let www = a
            .domains
            .iter()
            .find(|d| d.name == "www.a.example")
            .unwrap();
        assert!(www.origins.is_none());
        // The other customer is untouched.
        assert_eq!(e.config.customer("b").unwrap().origins.len(), 1);
        // Re-parsing the text gives the same origins again (text and config agree).
        let again = Config::from_toml(&e.text, "again").unwrap();
        assert_eq!(again.customer("a").unwrap().origins.len(), 2);
    }

    #[test]
    fn inline_origins_and_domains_are_edited_inline() {
        let e = add_origin(
            BASE,
            "b",
            &new("two", "192.0.2.3"),
            &["www.b.example".into()],
            "t",
        )
        .unwrap();
        let b = e.config.customer("b").unwrap();
        assert_eq!(b.origins.len(), 2);
        assert_eq!(b.domains[0].origins.as_deref().unwrap(), ["one", "two"]);
        let r = remove_origin(&e.text, "b", "one", "t").unwrap();
        let b = r.config.customer("b").unwrap();
        assert_eq!(b.origins.len(), 1);
        assert_eq!(b.origins[0].name, "two");
        assert_eq!(b.domains[0].origins.as_deref().unwrap(), ["two"]);
        assert_eq!(r.config.network.version, 9);
    }

    #[test]
    fn a_trailing_signature_comment_stays_the_last_line() {
        // A signed config ends with its signature comment; re-signing replaces the last
        // line, so an edit must not put anything after it, even for the last table.
        let signed = format!("{BASE}# popnet-signature v1 key=k sig=s\n");
        let last = format!(
            "{BASE}\n[[customers]]\nname = \"c\"\nzones = [\"c.example\"]\n[[customers.origins]]\nname = \"x\"\naddresses = [\"192.0.2.50\"]\n"
        );
        let last_signed = format!("{last}# popnet-signature v1 key=k sig=s\n");
        for (text, customer) in [(&signed, "a"), (&signed, "b"), (&last_signed, "c")] {
            let e = add_origin(text, customer, &new("two", "192.0.2.2"), &[], "t").unwrap();
            assert!(
                e.text
                    .trim_end()
                    .lines()
                    .last()
                    .unwrap()
                    .starts_with("# popnet-signature v1"),
                "{customer}: {}",
                e.text
            );
            assert_eq!(e.config.customer(customer).unwrap().origins.len(), 2);
        }
    }

    #[test]
    fn removing_the_last_origin_of_a_domain_or_an_unknown_one_is_refused() {
        assert!(matches!(
            remove_origin(BASE, "a", "one", "t"),
            Err(EditError::LastOrigin { ref domain, .. }) if domain == "api.a.example"
        ));
        assert!(matches!(
            remove_origin(BASE, "a", "nope", "t"),
            Err(EditError::NoOrigin { .. })
        ));
        assert!(matches!(
            remove_origin(BASE, "zz", "one", "t"),
            Err(EditError::NoCustomer(_))
        ));
    }

    #[test]
    fn duplicates_unknown_domains_and_invalid_results_are_refused() {
        assert!(matches!(
            add_origin(BASE, "a", &new("one", "192.0.2.5"), &[], "t"),
            Err(EditError::OriginExists { .. })
        ));
        assert!(matches!(
            add_origin(
                BASE,
                "a",
                &new("two", "192.0.2.5"),
                &["www.b.example".into()],
                "t"
            ),
            Err(EditError::NoDomain { .. })
        ));
        // A name that is not a label: the validator says where and what to do.
        let o = new("two words", "192.0.2.5");
        match add_origin(BASE, "a", &o, &[], "t") {
            Err(EditError::Invalid(e)) => {
                assert!(
                    e.to_string().contains("customers[0].origins[1].name"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            add_origin("[network", "a", &o, &[], "t"),
            Err(EditError::Syntax(_))
        ));
    }
}
