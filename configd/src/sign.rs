//! Admin keys and signatures: a config carries its signature as its last line (a TOML comment), commands are signed JSON.
//!
//! A signed config is the TOML text followed by one line
//!
//! ```text
//! # popnet-signature v1 key=<base64 public key> sig=<base64 signature>
//! ```
//!
//! The signature is ed25519 over `popnet config v1\0` and every byte before that line,
//! so the signed file is still a valid config (`popctl config check` reads it) and the
//! exact bytes reviewed are the bytes every box runs. Commands (prepare, commit, abort,
//! purge) are JSON signed the same way with their own context, and carry the network
//! name, an issue time and a random id so that they cannot be replayed elsewhere or much
//! later.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use popnet_config::{Admin, Config, ConfigError};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// How a signature line starts.
pub const SIGNATURE_PREFIX: &str = "# popnet-signature v1 ";
const CONFIG_CONTEXT: &[u8] = b"popnet config v1\0";
const COMMAND_CONTEXT: &[u8] = b"popnet command v1\0";
/// A command issued further from now than this (either way) is refused.
pub const COMMAND_MAX_AGE_MS: u64 = 10 * 60 * 1000;

/// Why an admin key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read the admin key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an ed25519 private key in PKCS#8 PEM ({reason}); make one with `popctl config keygen` or `openssl genpkey -algorithm ed25519`"
    )]
    Parse { path: String, reason: String },
    #[error("cannot write the admin key {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// An admin's ed25519 signing key.
pub struct AdminKey {
    key: SigningKey,
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminKey(public {})", self.public_b64())
    }
}

impl AdminKey {
    /// A new random key.
    pub fn generate() -> Result<AdminKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        seed.fill(0);
        Ok(AdminKey { key })
    }

    /// Reads a PKCS#8 PEM private key (`origin` names it in errors).
    pub fn from_pem(text: &str, origin: &str) -> Result<AdminKey, KeyError> {
        SigningKey::from_pkcs8_pem(text)
            .map(|key| AdminKey { key })
            .map_err(|e| KeyError::Parse {
                path: origin.to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<AdminKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AdminKey::from_pem(&text, &path.display().to_string())
    }

    /// Writes the key as PKCS#8 PEM to a new file readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let pem = self
            .key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(pem.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)
    }

    /// The public key as the config writes it (`[[network.admins]] key`).
    pub fn public_b64(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    fn sign(&self, context: &[u8], bytes: &[u8]) -> Signature {
        let mut msg = Vec::with_capacity(context.len() + bytes.len());
        msg.extend_from_slice(context);
        msg.extend_from_slice(bytes);
        self.key.sign(&msg)
    }
}

/// Why a config or command is not accepted. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("{origin} is not signed; sign it with `popctl config sign --key KEYFILE {origin}`")]
    Unsigned { origin: String },
    #[error("{origin}: line {line}: {problem}; sign the file again with `popctl config sign`")]
    Malformed {
        origin: String,
        line: usize,
        problem: String,
    },
    #[error(
        "{what}: the signature does not match the content (was it changed after signing?); sign it again with `popctl config sign`"
    )]
    BadSignature { what: String },
    #[error(
        "{what} is signed with key {key}, which is not an admin of the config this box runs (admins: {admins}); sign it with one of their keys"
    )]
    UnknownSigner {
        what: String,
        key: String,
        admins: String,
    },
    #[error(
        "version {version} is not above version {running} that this box runs; raise network.version above {running} and sign again"
    )]
    NotNewer { version: u32, running: u32 },
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("the command is for network {got:?}, this box is in network {want:?}")]
    OtherNetwork { got: String, want: String },
    #[error(
        "the command was issued {skew_s} s from this box's clock (at most {} s); check the clocks (NTP) of the admin host and this box",
        COMMAND_MAX_AGE_MS / 1000
    )]
    Expired { skew_s: i64 },
    #[error("the command is malformed: {0}")]
    BadCommand(String),
}

/// A config file with its signature, parsed and validated (the signature is checked
/// against a set of admins by [`SignedConfig::verify`]).
#[derive(Debug, Clone)]
pub struct SignedConfig {
    /// The whole file, signature line included.
    pub text: String,
    /// Bytes covered by the signature.
    body_len: usize,
    pub config: Config,
    signer: VerifyingKey,
    signature: Signature,
    /// SHA-256 of `text`, hex: names this exact file.
    pub digest: String,
}

/// Signs a config text: any signature line it has is replaced by one made with `key`.
pub fn sign_config(text: &str, key: &AdminKey) -> String {
    let mut body = strip_signature(text).to_string();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let sig = key.sign(CONFIG_CONTEXT, body.as_bytes());
    format!(
        "{body}{SIGNATURE_PREFIX}key={} sig={}\n",
        key.public_b64(),
        B64.encode(sig.to_bytes())
    )
}

/// `text` without its trailing signature line (and the blank space after the body).
fn strip_signature(text: &str) -> &str {
    let trimmed = text.trim_end();
    match trimmed.rfind('\n') {
        Some(i) if trimmed[i + 1..].starts_with(SIGNATURE_PREFIX) => &text[..i + 1],
        None if trimmed.starts_with(SIGNATURE_PREFIX) => "",
        _ => text,
    }
}

/// SHA-256 of `bytes` in hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(text)
        .map_err(|e| format!("the key is not base64 ({e})"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an ed25519 key is 32 bytes, this is {}", bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an ed25519 public key ({e})"))
}

fn parse_sig(text: &str) -> Result<Signature, String> {
    let bytes = B64
        .decode(text)
        .map_err(|e| format!("the signature is not base64 ({e})"))?;
    Signature::from_slice(&bytes)
        .map_err(|_| format!("an ed25519 signature is 64 bytes, this is {}", bytes.len()))
}

/// The admin of `admins` whose key is `key`.
fn admin_of<'a>(admins: &'a [Admin], key: &VerifyingKey) -> Option<&'a str> {
    admins
        .iter()
        .find(|a| parse_key(a.key.trim()).is_ok_and(|k| k == *key))
        .map(|a| a.name.as_str())
}

fn admin_names(admins: &[Admin]) -> String {
    if admins.is_empty() {
        "none".to_string()
    } else {
        admins
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl SignedConfig {
    /// Splits off and reads the signature line, then parses and validates the config.
    /// `origin` names the source in errors.
    pub fn parse(text: String, origin: &str) -> Result<SignedConfig, Refused> {
        let body_len = strip_signature(&text).len();
        if body_len == text.len() {
            return Err(Refused::Unsigned {
                origin: origin.to_string(),
            });
        }
        let body = &text[..body_len];
        let sig_line_no = body.matches('\n').count() + 1;
        if let Some((i, _)) = body
            .lines()
            .enumerate()
            .find(|(_, l)| l.trim_start().starts_with("# popnet-signature"))
        {
            return Err(Refused::Malformed {
                origin: origin.to_string(),
                line: i + 1,
                problem: "a signature line that is not the last line (a file carries one signature, at its end)".to_string(),
            });
        }
        let line = text[body_len..].trim();
        let fields = &line[SIGNATURE_PREFIX.len()..];
        let malformed = |problem: String| Refused::Malformed {
            origin: origin.to_string(),
            line: sig_line_no,
            problem,
        };
        let (mut key, mut sig) = (None, None);
        for f in fields.split_whitespace() {
            match f.split_once('=') {
                Some(("key", v)) if key.is_none() => key = Some(parse_key(v).map_err(malformed)?),
                Some(("sig", v)) if sig.is_none() => sig = Some(parse_sig(v).map_err(malformed)?),
                _ => {
                    return Err(malformed(format!(
                        "unexpected {f:?} in the signature line (it holds key=... sig=...)"
                    )));
                }
            }
        }
        let (Some(signer), Some(signature)) = (key, sig) else {
            return Err(malformed(
                "the signature line lacks key=... or sig=...".to_string(),
            ));
        };
        let config = Config::from_toml(body, origin)?;
        Ok(SignedConfig {
            digest: digest(text.as_bytes()),
            text,
            body_len,
            config,
            signer,
            signature,
        })
    }

    pub fn version(&self) -> u32 {
        self.config.network.version
    }

    /// The signer's public key, base64.
    pub fn signer_key(&self) -> String {
        B64.encode(self.signer.as_bytes())
    }

    /// Checks the signature and that its key belongs to one of `admins`; returns the
    /// admin's name.
    pub fn verify(&self, admins: &[Admin]) -> Result<String, Refused> {
        let what = format!("config version {}", self.version());
        let mut msg = Vec::with_capacity(CONFIG_CONTEXT.len() + self.body_len);
        msg.extend_from_slice(CONFIG_CONTEXT);
        msg.extend_from_slice(&self.text.as_bytes()[..self.body_len]);
        self.signer
            .verify(&msg, &self.signature)
            .map_err(|_| Refused::BadSignature { what: what.clone() })?;
        admin_of(admins, &self.signer)
            .map(str::to_string)
            .ok_or_else(|| Refused::UnknownSigner {
                what,
                key: self.signer_key(),
                admins: admin_names(admins),
            })
    }

    /// What a box running `running` does with this config: it must be signed by one of
    /// `running`'s admins and have a higher version. Returns the signer's name.
    pub fn accept(&self, running: &Config) -> Result<String, Refused> {
        let who = self.verify(&running.network.admins)?;
        if self.version() <= running.network.version {
            return Err(Refused::NotNewer {
                version: self.version(),
                running: running.network.version,
            });
        }
        Ok(who)
    }

    /// The first config of a box: signed by one of its own admins.
    pub fn accept_first(&self) -> Result<String, Refused> {
        self.verify(&self.config.network.admins)
    }
}

/// What a signed command asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Op {
    /// Hold this config (by digest) as pending for push `push`.
    Prepare {
        push: String,
        version: u32,
        digest: String,
    },
    /// Switch to the config pending for `push`.
    Commit { push: String, version: u32 },
    /// Drop the config pending for `push`.
    Abort { push: String },
    /// Purge the POP caches (the body of the cache admin's `POST /purge`).
    Purge { purge: serde_json::Value },
}

/// A command with its replay guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub network: String,
    pub issued_ms: u64,
    /// Random, hex: a command is carried out once.
    pub id: String,
    #[serde(flatten)]
    pub op: Op,
}

impl Command {
    /// A command for `network`, issued now, with a fresh id.
    pub fn new(network: &str, op: Op) -> Result<Command, KeyError> {
        Ok(Command {
            network: network.to_string(),
            issued_ms: unix_ms(),
            id: random_id()?,
            op,
        })
    }
}

/// A command as it travels: its JSON text, the signer's key and the signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedCommand {
    pub body: String,
    pub key: String,
    pub sig: String,
}

impl SignedCommand {
    pub fn sign(cmd: &Command, key: &AdminKey) -> SignedCommand {
        // Serializing plain data with string keys cannot fail.
        let body = serde_json::to_string(cmd).unwrap_or_default();
        let sig = key.sign(COMMAND_CONTEXT, body.as_bytes());
        SignedCommand {
            body,
            key: key.public_b64(),
            sig: B64.encode(sig.to_bytes()),
        }
    }

    /// Checks the signature against `cfg`'s admins, the network name and the issue
    /// time; returns the command and the admin's name.
    pub fn verify(&self, cfg: &Config, now_ms: u64) -> Result<(Command, String), Refused> {
        let key = parse_key(&self.key).map_err(Refused::BadCommand)?;
        let sig = parse_sig(&self.sig).map_err(Refused::BadCommand)?;
        let mut msg = Vec::with_capacity(COMMAND_CONTEXT.len() + self.body.len());
        msg.extend_from_slice(COMMAND_CONTEXT);
        msg.extend_from_slice(self.body.as_bytes());
        key.verify(&msg, &sig).map_err(|_| Refused::BadSignature {
            what: "the command".to_string(),
        })?;
        let who = admin_of(&cfg.network.admins, &key).ok_or_else(|| Refused::UnknownSigner {
            what: "the command".to_string(),
            key: self.key.clone(),
            admins: admin_names(&cfg.network.admins),
        })?;
        let cmd: Command =
            serde_json::from_str(&self.body).map_err(|e| Refused::BadCommand(e.to_string()))?;
        if cmd.network != cfg.network.name {
            return Err(Refused::OtherNetwork {
                got: cmd.network,
                want: cfg.network.name.clone(),
            });
        }
        let skew = cmd.issued_ms as i64 - now_ms as i64;
        if skew.unsigned_abs() > COMMAND_MAX_AGE_MS {
            return Err(Refused::Expired {
                skew_s: skew / 1000,
            });
        }
        Ok((cmd, who.to_string()))
    }
}

/// 16 random bytes in hex.
pub fn random_id() -> Result<String, KeyError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}

/// Current unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: u32, admins: &[(&str, &AdminKey)]) -> String {
        let mut admins_toml = String::new();
        for (name, k) in admins {
            admins_toml.push_str(&format!(
                "[[network.admins]]\nname = \"{name}\"\nkey = \"{}\"\n",
                k.public_b64()
            ));
        }
        popnet_config::DEMO_TOML
            .replacen("version = 1\n", &format!("version = {version}\n"), 1)
            .replacen("[probes]\n", &format!("{admins_toml}\n[probes]\n"), 1)
    }

    #[test]
    fn a_signed_config_verifies_and_is_still_a_config() {
        let alice = AdminKey::generate().unwrap();
        let text = sign_config(&config(2, &[("alice", &alice)]), &alice);
        assert!(text.lines().last().unwrap().starts_with(SIGNATURE_PREFIX));
        popnet_config::Config::from_toml(&text, "signed").expect("still a valid config");
        let s = SignedConfig::parse(text.clone(), "t").unwrap();
        assert_eq!(s.accept_first().unwrap(), "alice");
        assert_eq!(s.digest, digest(text.as_bytes()));
        // Signing again replaces the signature instead of adding one.
        let again = sign_config(&text, &alice);
        assert_eq!(again.matches(SIGNATURE_PREFIX).count(), 1);
        assert_eq!(again, text, "ed25519 signatures are deterministic");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let alice = AdminKey::generate().unwrap();
        let mallory = AdminKey::generate().unwrap();
        let running =
            popnet_config::Config::from_toml(&config(5, &[("alice", &alice)]), "r").unwrap();

        let unsigned = SignedConfig::parse(config(6, &[("alice", &alice)]), "f.toml");
        assert!(matches!(unsigned, Err(Refused::Unsigned { .. })));
        assert!(
            unsigned
                .unwrap_err()
                .to_string()
                .contains("popctl config sign")
        );

        let tampered = sign_config(&config(6, &[("alice", &alice)]), &alice).replacen(
            "version = 6",
            "version = 7",
            1,
        );
        let e = SignedConfig::parse(tampered, "t")
            .unwrap()
            .accept(&running)
            .unwrap_err();
        assert!(matches!(e, Refused::BadSignature { .. }), "{e}");

        let foreign = sign_config(&config(6, &[("mallory", &mallory)]), &mallory);
        let e = SignedConfig::parse(foreign, "t")
            .unwrap()
            .accept(&running)
            .unwrap_err();
        assert!(matches!(e, Refused::UnknownSigner { .. }), "{e}");
        assert!(e.to_string().contains("admins: alice"), "{e}");

        let older = sign_config(&config(5, &[("alice", &alice)]), &alice);
        let e = SignedConfig::parse(older, "t")
            .unwrap()
            .accept(&running)
            .unwrap_err();
        assert!(
            matches!(
                e,
                Refused::NotNewer {
                    version: 5,
                    running: 5
                }
            ),
            "{e}"
        );

        let newer = sign_config(&config(6, &[("alice", &alice)]), &alice);
        assert_eq!(
            SignedConfig::parse(newer, "t")
                .unwrap()
                .accept(&running)
                .unwrap(),
            "alice"
        );
    }

    #[test]
    fn malformed_signature_lines_are_named_by_line() {
        let alice = AdminKey::generate().unwrap();
        let text = sign_config(&config(2, &[("alice", &alice)]), &alice);
        let last = text.lines().count();
        let cut = text.replace(" sig=", " sag=");
        match SignedConfig::parse(cut, "f.toml") {
            Err(Refused::Malformed { line, .. }) => assert_eq!(line, last),
            other => panic!("{:?}", other.map(|s| s.digest)),
        }
        let two = format!("{text}{}", text.lines().last().unwrap());
        let e = SignedConfig::parse(two, "f.toml").unwrap_err();
        assert!(matches!(e, Refused::Malformed { .. }), "{e}");
        let short = text.replace("sig=", "sig=AAAA");
        assert!(SignedConfig::parse(short, "f.toml").is_err());
    }

    #[test]
    fn commands_are_bound_to_admins_network_and_time() {
        let alice = AdminKey::generate().unwrap();
        let mallory = AdminKey::generate().unwrap();
        let cfg = popnet_config::Config::from_toml(&config(5, &[("alice", &alice)]), "r").unwrap();
        let op = Op::Abort { push: "p".into() };
        let c = Command::new("demo", op.clone()).unwrap();
        let (back, who) = SignedCommand::sign(&c, &alice)
            .verify(&cfg, unix_ms())
            .unwrap();
        assert_eq!((back.op, who.as_str()), (op.clone(), "alice"));

        let e = SignedCommand::sign(&c, &mallory)
            .verify(&cfg, unix_ms())
            .unwrap_err();
        assert!(matches!(e, Refused::UnknownSigner { .. }), "{e}");

        let other = Command::new("elsewhere", op.clone()).unwrap();
        let e = SignedCommand::sign(&other, &alice)
            .verify(&cfg, unix_ms())
            .unwrap_err();
        assert!(matches!(e, Refused::OtherNetwork { .. }), "{e}");

        let mut old = Command::new("demo", op).unwrap();
        old.issued_ms -= COMMAND_MAX_AGE_MS + 60_000;
        let e = SignedCommand::sign(&old, &alice)
            .verify(&cfg, unix_ms())
            .unwrap_err();
        assert!(matches!(e, Refused::Expired { .. }), "{e}");

        let mut forged = SignedCommand::sign(&c, &alice);
        forged.body = forged.body.replace("\"p\"", "\"q\"");
        let e = forged.verify(&cfg, unix_ms()).unwrap_err();
        assert!(matches!(e, Refused::BadSignature { .. }), "{e}");
    }

    #[test]
    fn keys_round_trip_through_pkcs8_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.key");
        let k = AdminKey::generate().unwrap();
        k.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(AdminKey::load(&path).unwrap().public_b64(), k.public_b64());
        assert!(
            k.save(&path).is_err(),
            "an existing key file is never overwritten"
        );
        std::fs::write(dir.path().join("junk"), "not a key").unwrap();
        let e = AdminKey::load(&dir.path().join("junk"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("popctl config keygen"), "{e}");
    }
}
