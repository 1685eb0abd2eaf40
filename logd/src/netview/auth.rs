//! NetView users and sessions: argon2id password hashes in a users file, random session tokens, CSRF tokens, login throttling.
//!
//! The users file (TOML, `[[users]]` with `name`, `role` = `admin` | `customer`,
//! `customer`, `password` = an argon2id PHC string) is written by `popnet netview-user`
//! and re-read when it changes. A session is a 256-bit random token in an HttpOnly,
//! SameSite=Strict cookie; each session has its own CSRF token that every form carries.
//! Five failed logins for one name or from one address within ten minutes block that
//! name or address until the ten minutes are over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept (the least recently used go first).
const MAX_SESSIONS: usize = 10_000;
/// Failed logins allowed per user name in [`FAIL_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// Failed logins allowed per client address in [`FAIL_WINDOW`]: higher than per name,
/// because many users may share one address (a proxy, an office, loopback), and a low
/// limit there would let anyone lock every user out.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;
pub const FAIL_WINDOW: Duration = Duration::from_secs(600);

/// Why the users file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("{0}")]
    Input(String),
}

/// What a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every customer.
    Admin,
    /// One customer's pages only.
    Customer,
}

/// One user as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// argon2id PHC string.
    pub password: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

fn valid_user_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

fn read_users(path: &Path) -> Result<Vec<User>, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let f: UsersFile = toml::from_str(&text).map_err(|e| AuthError::Invalid {
        path: path.into(),
        why: e.to_string(),
    })?;
    for (i, u) in f.users.iter().enumerate() {
        let bad = |why: String| AuthError::Invalid {
            path: path.into(),
            why: format!("users[{i}]: {why}"),
        };
        if !valid_user_name(&u.name) {
            return Err(bad(format!("{:?} is not a valid user name", u.name)));
        }
        if u.role == Role::Customer && u.customer.is_none() {
            return Err(bad("a customer user needs `customer`".into()));
        }
        PasswordHash::new(&u.password).map_err(|e| {
            bad(format!(
                "password is not a PHC hash ({e}); set it with `popnet netview-user add`"
            ))
        })?;
    }
    Ok(f.users)
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Input(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Input(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Input(e.to_string()))
}

/// Adds a user to the file (or replaces one of the same name), written atomically with mode 0600.
pub fn add_user(
    path: &Path,
    name: &str,
    role: Role,
    customer: Option<&str>,
    password: &str,
) -> Result<(), AuthError> {
    if !valid_user_name(name) {
        return Err(AuthError::Input(format!(
            "{name:?} is not a valid user name; use letters, digits and - _ . @"
        )));
    }
    if password.chars().count() < 10 {
        return Err(AuthError::Input(
            "the password is shorter than 10 characters".into(),
        ));
    }
    if role == Role::Customer && customer.is_none() {
        return Err(AuthError::Input("a customer user needs --customer".into()));
    }
    let mut users = read_users(path)?;
    users.retain(|u| u.name != name);
    users.push(User {
        name: name.into(),
        role,
        customer: customer.map(str::to_string),
        password: hash_password(password)?,
    });
    write_users(path, users)
}

/// Removes a user; false when there was none of that name.
pub fn remove_user(path: &Path, name: &str) -> Result<bool, AuthError> {
    let mut users = read_users(path)?;
    let before = users.len();
    users.retain(|u| u.name != name);
    if users.len() == before {
        return Ok(false);
    }
    write_users(path, users).map(|()| true)
}

fn write_users(path: &Path, users: Vec<User>) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io {
        path: path.into(),
        source,
    };
    let text =
        toml::to_string(&UsersFile { users }).map_err(|e| AuthError::Input(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(
        format!("# NetView users: written by `popnet netview-user`; passwords are argon2id hashes.\n{text}")
            .as_bytes(),
    )
    .and_then(|()| f.sync_all())
    .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub customer: Option<String>,
    pub csrf: String,
    last: Instant,
}

impl Session {
    /// May this session see `customer`'s pages?
    pub fn may_see(&self, customer: &str) -> bool {
        self.role == Role::Admin || self.customer.as_deref() == Some(customer)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Checks a form's CSRF token in constant time.
    pub fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password (the same answer for both).
    Wrong,
    /// Too many failures; try again later.
    Throttled,
    /// The users file is broken.
    Broken(String),
}

struct Failures {
    count: u32,
    since: Instant,
}

struct Inner {
    users: Vec<User>,
    users_mtime: Option<SystemTime>,
    sessions: HashMap<String, Session>,
    by_name: HashMap<String, Failures>,
    by_addr: HashMap<IpAddr, Failures>,
}

/// Users, sessions and failed logins.
pub struct Auth {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Verified against when the name is unknown, so both cases take as long.
    dummy: String,
}

/// A random token of 32 bytes, hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // Without randomness no session can be made safely: refuse by panicking in the
        // handler (answered 500) rather than hand out a guessable token.
        panic!("the system has no random numbers");
    }
    hex::encode(b)
}

fn blocked<K: std::hash::Hash + Eq>(m: &HashMap<K, Failures>, k: &K, max: u32) -> bool {
    m.get(k)
        .is_some_and(|f| f.since.elapsed() < FAIL_WINDOW && f.count >= max)
}

fn fail<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Failures>, k: K) {
    if m.len() > 100_000 {
        m.retain(|_, f| f.since.elapsed() < FAIL_WINDOW);
    }
    let f = m.entry(k).or_insert(Failures {
        count: 0,
        since: Instant::now(),
    });
    if f.since.elapsed() >= FAIL_WINDOW {
        f.count = 0;
        f.since = Instant::now();
    }
    f.count += 1;
}

impl Auth {
    /// Loads the users file (a missing file is no users).
    pub fn open(path: &Path) -> Result<Auth, AuthError> {
        let users = read_users(path)?;
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if users.is_empty() {
            tracing::warn!(file = %path.display(), "netview: no users; add one with `popnet netview-user add`");
        }
        Ok(Auth {
            path: path.into(),
            inner: Mutex::new(Inner {
                users,
                users_mtime: mtime,
                sessions: HashMap::new(),
                by_name: HashMap::new(),
                by_addr: HashMap::new(),
            }),
            dummy: hash_password("not a password of anyone")?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a name and password; on success, a new session (its token and record).
    pub fn login(
        &self,
        name: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<(String, Session), LoginError> {
        let user = {
            let mut g = self.lock();
            if blocked(&g.by_addr, &from, MAX_FAILURES_PER_ADDRESS)
                || blocked(&g.by_name, &name.to_string(), MAX_FAILURES)
            {
                return Err(LoginError::Throttled);
            }
            if let Err(e) = self.refresh(&mut g) {
                return Err(LoginError::Broken(e.to_string()));
            }
            g.users.iter().find(|u| u.name == name).cloned()
        };
        // The hash is checked outside the lock: it takes tens of milliseconds.
        let hash = user
            .as_ref()
            .map_or(self.dummy.as_str(), |u| u.password.as_str());
        let ok = PasswordHash::new(hash).ok().is_some_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        let mut g = self.lock();
        match user {
            Some(u) if ok => {
                g.by_name.remove(name);
                let token = random_token();
                let s = Session {
                    user: u.name,
                    role: u.role,
                    customer: u.customer,
                    csrf: random_token(),
                    last: Instant::now(),
                };
                if g.sessions.len() >= MAX_SESSIONS {
                    g.sessions.retain(|_, s| s.last.elapsed() < SESSION_IDLE);
                    if g.sessions.len() >= MAX_SESSIONS
                        && let Some(oldest) = g
                            .sessions
                            .iter()
                            .min_by_key(|(_, s)| s.last)
                            .map(|(k, _)| k.clone())
                    {
                        g.sessions.remove(&oldest);
                    }
                }
                g.sessions.insert(token.clone(), s.clone());
                Ok((token, s))
            }
            _ => {
                fail(&mut g.by_addr, from);
                fail(&mut g.by_name, name.to_string());
                Err(LoginError::Wrong)
            }
        }
    }

    /// Re-reads the users file if it changed since it was read. Sessions of users
    /// removed, or whose role or customer changed, end.
    fn refresh(&self, g: &mut Inner) -> Result<(), AuthError> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != g.users_mtime {
            g.users = read_users(&self.path)?;
            g.users_mtime = mtime;
            let Inner {
                users, sessions, ..
            } = g;
            sessions.retain(|_, s| {
                users
                    .iter()
                    .any(|u| u.name == s.user && u.role == s.role && u.customer == s.customer)
            });
        }
        Ok(())
    }

    /// The session of a token (and notes the use).
    pub fn session(&self, token: Option<&str>) -> Option<Session> {
        let token = token?;
        if token.len() != 64 {
            return None;
        }
        let mut g = self.lock();
        if let Err(e) = self.refresh(&mut g) {
            // A file that no longer parses keeps the users (and sessions) read before.
            tracing::warn!(error = %e, "netview: the users file cannot be read");
        }
        let s = g.sessions.get_mut(token)?;
        if s.last.elapsed() >= SESSION_IDLE {
            g.sessions.remove(token);
            return None;
        }
        s.last = Instant::now();
        Some(s.clone())
    }

    pub fn logout(&self, token: &str) {
        self.lock().sessions.remove(token);
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn user_count(&self) -> usize {
        self.lock().users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_log_in_with_their_password_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        add_user(
            &p,
            "ann",
            Role::Customer,
            Some("shop"),
            "correct horse battery",
        )
        .unwrap();
        add_user(&p, "root", Role::Admin, None, "another long password").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"));
        let a = Auth::open(&p).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (tok, s) = a.login("ann", "correct horse battery", ip).unwrap();
        assert_eq!(tok.len(), 64);
        assert!(s.may_see("shop") && !s.may_see("news") && !s.is_admin());
        assert_eq!(a.session(Some(&tok)).unwrap().user, "ann");
        assert!(a.session(Some("0".repeat(64).as_str())).is_none());
        assert!(s.csrf_ok(Some(&s.csrf)) && !s.csrf_ok(Some("x")) && !s.csrf_ok(None));
        assert_eq!(a.login("ann", "wrong", ip), Err(LoginError::Wrong));
        assert_eq!(a.login("nobody", "wrong", ip), Err(LoginError::Wrong));
        a.logout(&tok);
        assert!(a.session(Some(&tok)).is_none());
        assert!(remove_user(&p, "ann").unwrap());
        assert!(!remove_user(&p, "ann").unwrap());
    }

    #[test]
    fn removing_a_user_ends_their_sessions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        add_user(
            &p,
            "ann",
            Role::Customer,
            Some("shop"),
            "correct horse battery",
        )
        .unwrap();
        add_user(
            &p,
            "bo",
            Role::Customer,
            Some("news"),
            "another long password",
        )
        .unwrap();
        let a = Auth::open(&p).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (ann, _) = a.login("ann", "correct horse battery", ip).unwrap();
        let (bo, _) = a.login("bo", "another long password", ip).unwrap();
        // Each rewrite gets a later mtime, whatever the clock's granularity.
        let touch = |secs| {
            std::fs::File::options()
                .append(true)
                .open(&p)
                .unwrap()
                .set_modified(SystemTime::now() + Duration::from_secs(secs))
                .unwrap()
        };
        assert!(remove_user(&p, "ann").unwrap());
        touch(1);
        assert!(a.session(Some(&ann)).is_none());
        assert_eq!(a.session(Some(&bo)).unwrap().user, "bo");
        // Moving a user to another customer ends their session too.
        add_user(
            &p,
            "bo",
            Role::Customer,
            Some("shop"),
            "another long password",
        )
        .unwrap();
        touch(2);
        assert!(a.session(Some(&bo)).is_none());
        // A broken file keeps the users read before.
        let (bo2, _) = a.login("bo", "another long password", ip).unwrap();
        std::fs::write(&p, "not toml [").unwrap();
        touch(3);
        assert_eq!(a.session(Some(&bo2)).unwrap().user, "bo");
    }

    #[test]
    fn repeated_failures_are_throttled() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        add_user(
            &p,
            "ann",
            Role::Customer,
            Some("shop"),
            "correct horse battery",
        )
        .unwrap();
        let a = Auth::open(&p).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.login("ann", "nope", ip), Err(LoginError::Wrong));
        }
        // Even the right password is refused now, from anywhere for this name.
        assert_eq!(
            a.login(
                "ann",
                "correct horse battery",
                "192.0.2.10".parse().unwrap()
            ),
            Err(LoginError::Throttled)
        );
        // Another user behind the same address is not locked out by ann's failures...
        add_user(&p, "bo", Role::Customer, Some("shop"), "bo's long password").unwrap();
        assert!(a.login("bo", "bo's long password", ip).is_ok());
        // ...until the address itself has failed too often.
        for i in MAX_FAILURES..MAX_FAILURES_PER_ADDRESS {
            let _ = a.login(&format!("guess{i}"), "nope", ip);
        }
        assert_eq!(
            a.login("bo", "bo's long password", ip),
            Err(LoginError::Throttled)
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("users.toml");
        assert!(add_user(&p, "a b", Role::Admin, None, "long enough pw").is_err());
        assert!(add_user(&p, "ann", Role::Admin, None, "short").is_err());
        assert!(add_user(&p, "ann", Role::Customer, None, "long enough pw").is_err());
        std::fs::write(
            &p,
            "[[users]]\nname = \"x\"\nrole = \"admin\"\npassword = \"plain\"\n",
        )
        .unwrap();
        let e = Auth::open(&p).err().unwrap().to_string();
        assert!(e.contains("PHC"), "{e}");
    }
}
