//! The store: rollups and stream state in SQLite, raw records in zstd files per customer per hour, written so every batch counts exactly once.
//!
//! Ingesting a batch: (1) a batch whose `(stream, seq)` was already stored is a
//! duplicate and changes nothing; (2) its records are read, those of customers this log
//! server does not keep are counted and dropped, the rest summed into minute and hour
//! rollups; (3) the raw lines are appended as one zstd frame per customer-hour file and
//! synced; (4) one SQLite transaction adds the rollups, records the files' new lengths
//! and the stream's next number. Only then is the batch acknowledged. After a crash,
//! every raw file is cut back to the length the database committed, so a batch that was
//! half written is undone everywhere and stored again, once, when the sender resends it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use logship::{AccessRecord, Batch, DnsRecord, Kind, NO_CUSTOMER, ProbeRecord};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::rollup::{Http, Increments, Probe};
use crate::time::{self, HOUR, MINUTE, Month};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the batch is not readable: {0}")]
    Batch(#[from] logship::WireError),
    #[error("{0}")]
    Query(String),
}

/// Which customers' records this log server keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Customers listed for this log server.
    pub managed: HashSet<String>,
    /// Customers some other log server lists (their records are dropped here).
    pub elsewhere: HashSet<String>,
    /// True when a POP names this log server: it also keeps the records of no customer
    /// and of customers no log server lists.
    pub others: bool,
}

impl Scope {
    /// The scope of log server `name` in `cfg`.
    pub fn of(cfg: &popnet_config::Config, name: &str) -> Scope {
        let mut s = Scope::default();
        for l in &cfg.log_servers {
            for c in &l.customers {
                if l.name == name {
                    s.managed.insert(c.clone());
                } else {
                    s.elsewhere.insert(c.clone());
                }
            }
        }
        s.others = cfg
            .pops
            .iter()
            .any(|p| p.log_server.as_deref() == Some(name));
        s
    }

    pub fn keeps(&self, customer: &str) -> bool {
        if self.managed.contains(customer) {
            return true;
        }
        self.others && !self.elsewhere.contains(customer) && safe_name(customer)
    }
}

/// Customer and POP names that may become file names: `-` or a DNS label.
fn safe_name(s: &str) -> bool {
    s == NO_CUSTOMER
        || (!s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-'))
}

/// The directory of a customer's raw files.
fn customer_dir(customer: &str) -> &str {
    if customer == NO_CUSTOMER {
        "_none"
    } else {
        customer
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored {
        kept: u64,
        /// Records of customers another log server keeps.
        misrouted: u64,
        malformed: u64,
    },
    Duplicate,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub batches: AtomicU64,
    pub duplicates: AtomicU64,
    pub records: AtomicU64,
    pub misrouted: AtomicU64,
    pub malformed: AtomicU64,
    pub gaps: AtomicU64,
    pub bytes_raw: AtomicU64,
}

/// A sender's stream as the store knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamInfo {
    pub stream: String,
    pub source: String,
    pub kind: String,
    pub next_seq: u64,
    pub batches: u64,
    pub records: u64,
    /// Batches the sender skipped (dropped from a full spool).
    pub missing: u64,
    pub last_ms: u64,
}

struct Writer {
    db: Connection,
    /// Next expected sequence number per stream.
    streams: HashMap<[u8; 16], u64>,
    /// Committed length of every raw file (relative path).
    files: HashMap<String, u64>,
}

/// The log server's storage.
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    scope: Scope,
    w: Mutex<Writer>,
    r: Mutex<Connection>,
    pub counters: StoreCounters,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    stream BLOB PRIMARY KEY, source TEXT NOT NULL, kind TEXT NOT NULL,
    next_seq INTEGER NOT NULL, batches INTEGER NOT NULL, records INTEGER NOT NULL,
    missing INTEGER NOT NULL, last_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS raw_files (path TEXT PRIMARY KEY, len INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS http (
    res INTEGER NOT NULL, t INTEGER NOT NULL, customer TEXT NOT NULL, pop TEXT NOT NULL,
    requests INTEGER NOT NULL, bytes INTEGER NOT NULL, hits INTEGER NOT NULL,
    misses INTEGER NOT NULL, stale INTEGER NOT NULL, pass INTEGER NOT NULL,
    errors INTEGER NOT NULL, s2xx INTEGER NOT NULL, s3xx INTEGER NOT NULL,
    s4xx INTEGER NOT NULL, s5xx INTEGER NOT NULL, s_other INTEGER NOT NULL,
    ttfb_us INTEGER NOT NULL,
    PRIMARY KEY (res, customer, t, pop)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dns (
    res INTEGER NOT NULL, t INTEGER NOT NULL, customer TEXT NOT NULL, pop TEXT NOT NULL,
    domain TEXT NOT NULL, server TEXT NOT NULL, server_kind TEXT NOT NULL,
    answers INTEGER NOT NULL,
    PRIMARY KEY (res, customer, t, pop, domain, server, server_kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probe (
    res INTEGER NOT NULL, t INTEGER NOT NULL, customer TEXT NOT NULL, pop TEXT NOT NULL,
    target TEXT NOT NULL, checks INTEGER NOT NULL, failures INTEGER NOT NULL,
    total_us INTEGER NOT NULL, max_us INTEGER NOT NULL,
    PRIMARY KEY (res, customer, t, pop, target)) WITHOUT ROWID;
";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SQLite stores signed 64-bit integers; counters beyond that are clamped.
fn sql_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One row of an HTTP series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub t: i64,
    #[serde(flatten)]
    pub http: Http,
}

/// DNS answers handed out, summed over a time span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRow {
    pub pop: String,
    pub domain: String,
    pub server: String,
    pub server_kind: String,
    pub answers: u64,
}

/// Probe results, summed over a time span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRow {
    pub pop: String,
    pub target: String,
    #[serde(flatten)]
    pub probe: Probe,
}

/// A customer's month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    pub customer: String,
    pub month: String,
    pub requests: u64,
    pub bytes: u64,
    /// Bytes / 10^9.
    pub gb: f64,
    pub fee_per_gb: f64,
    pub amount: f64,
    /// True while the month is not over.
    pub partial: bool,
    pub per_pop: Vec<PopBytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopBytes {
    pub pop: String,
    pub requests: u64,
    pub bytes: u64,
}

/// Totals since a time, for `popctl stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub customer: String,
    pub since: i64,
    pub until: i64,
    /// `minute` or `hour`: the rollup read (hour when `since` is older than the minute rollups).
    pub resolution: String,
    pub total: Http,
    pub hit_ratio: f64,
    pub per_pop: BTreeMap<String, Http>,
    pub dns: Vec<DnsRow>,
    pub probes: Vec<ProbeRow>,
}

fn read_http(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Http> {
    let g = |i: usize| row.get::<_, i64>(at + i).map(|v| v.max(0) as u64);
    Ok(Http {
        requests: g(0)?,
        bytes: g(1)?,
        hits: g(2)?,
        misses: g(3)?,
        stale: g(4)?,
        pass: g(5)?,
        errors: g(6)?,
        s2xx: g(7)?,
        s3xx: g(8)?,
        s4xx: g(9)?,
        s5xx: g(10)?,
        s_other: g(11)?,
        ttfb_us: g(12)?,
    })
}

const HTTP_SUMS: &str = "SUM(requests), SUM(bytes), SUM(hits), SUM(misses), SUM(stale), SUM(pass), SUM(errors), SUM(s2xx), SUM(s3xx), SUM(s4xx), SUM(s5xx), SUM(s_other), SUM(ttfb_us)";

impl Store {
    /// Opens (or creates) the store in `dir`, undoing any half-written batch.
    pub fn open(dir: &Path, scope: Scope) -> Result<Store, StoreError> {
        fs::create_dir_all(dir.join("raw")).map_err(|source| StoreError::Io {
            path: dir.join("raw"),
            source,
        })?;
        let db_path = dir.join("rollups.sqlite");
        let dbe = |source| StoreError::Db {
            path: db_path.clone(),
            source,
        };
        let db = Connection::open(&db_path).map_err(dbe)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(dbe)?;
        // Acknowledged means durable: sync every commit.
        db.pragma_update(None, "synchronous", "FULL").map_err(dbe)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(dbe)?;
        db.execute_batch(SCHEMA).map_err(dbe)?;
        let mut streams = HashMap::new();
        {
            let mut st = db
                .prepare("SELECT stream, next_seq FROM streams")
                .map_err(dbe)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
                .map_err(dbe)?;
            for row in rows {
                let (s, n) = row.map_err(dbe)?;
                if let Ok(id) = <[u8; 16]>::try_from(s.as_slice()) {
                    streams.insert(id, n.max(1) as u64);
                }
            }
        }
        let mut files = HashMap::new();
        {
            let mut st = db.prepare("SELECT path, len FROM raw_files").map_err(dbe)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(dbe)?;
            for row in rows {
                let (p, l) = row.map_err(dbe)?;
                files.insert(p, l.max(0) as u64);
            }
        }
        let r = Connection::open(&db_path).map_err(dbe)?;
        r.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(dbe)?;
        let store = Store {
            dir: dir.to_path_buf(),
            db_path: db_path.clone(),
            scope,
            w: Mutex::new(Writer { db, streams, files }),
            r: Mutex::new(r),
            counters: StoreCounters::default(),
        };
        store.recover()?;
        Ok(store)
    }

    fn dbe(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Cuts every raw file back to its committed length; removes uncommitted files.
    fn recover(&self) -> Result<(), StoreError> {
        let w = lock(&self.w);
        let raw = self.dir.join("raw");
        let mut stack = vec![raw.clone()];
        while let Some(d) = stack.pop() {
            let rd = fs::read_dir(&d).map_err(|source| StoreError::Io {
                path: d.clone(),
                source,
            })?;
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&self.dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                match w.files.get(&rel) {
                    Some(&committed) if len > committed => {
                        tracing::info!(file = %rel, len, committed, "logd: cutting back an uncommitted write");
                        let f = OpenOptions::new().write(true).open(&p).map_err(|source| {
                            StoreError::Io {
                                path: p.clone(),
                                source,
                            }
                        })?;
                        f.set_len(committed)
                            .and_then(|()| f.sync_all())
                            .map_err(|source| StoreError::Io {
                                path: p.clone(),
                                source,
                            })?;
                    }
                    Some(&committed) if len < committed => {
                        tracing::warn!(file = %rel, len, committed, "logd: a raw file is shorter than committed (changed outside logd?)");
                    }
                    Some(_) => {}
                    None => {
                        tracing::info!(file = %rel, "logd: removing a raw file no batch committed");
                        let _ = fs::remove_file(&p);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores a batch exactly once; see the module documentation.
    pub fn ingest(&self, batch: &Batch) -> Result<Ingested, StoreError> {
        let mut w = lock(&self.w);
        let next = w.streams.get(&batch.stream).copied().unwrap_or(1);
        if batch.seq < next {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(Ingested::Duplicate);
        }
        let missing = batch.seq - next;
        if missing > 0 {
            self.counters.gaps.fetch_add(missing, Ordering::Relaxed);
            tracing::warn!(source = %batch.source, missing, "logd: batches missing from a stream (the sender's spool overflowed)");
        }
        let now = time::now();
        let raw = match batch.decompress() {
            Ok(r) => r,
            Err(e) => {
                // Authenticated but unreadable: a sender's bug. Keep it aside for
                // inspection and move the stream on, or the sender would resend it forever.
                let bad = self.dir.join("bad");
                let path = bad.join(format!("{}-{}.zst", hex::encode(batch.stream), batch.seq));
                let io = |source| StoreError::Io {
                    path: path.clone(),
                    source,
                };
                fs::create_dir_all(&bad).map_err(io)?;
                fs::write(&path, &batch.payload).map_err(io)?;
                tracing::warn!(source = %batch.source, seq = batch.seq, error = %e, file = %path.display(), "logd: an unreadable batch was kept aside");
                w.db.execute(
                    "INSERT INTO streams VALUES (?1,?2,?3,?4,1,0,?5,?6)
                     ON CONFLICT (stream) DO UPDATE SET next_seq=excluded.next_seq,
                     batches=batches+1, missing=missing+excluded.missing, last_ms=excluded.last_ms",
                    params![
                        batch.stream.as_slice(),
                        batch.source,
                        batch.kind.as_str(),
                        sql_u64(batch.seq + 1),
                        sql_u64(missing),
                        now.saturating_mul(1000)
                    ],
                )
                .map_err(self.dbe())?;
                w.streams.insert(batch.stream, batch.seq + 1);
                self.counters
                    .malformed
                    .fetch_add(u64::from(batch.records), Ordering::Relaxed);
                return Ok(Ingested::Stored {
                    kept: 0,
                    misrouted: 0,
                    malformed: u64::from(batch.records),
                });
            }
        };
        let (mut kept, mut misrouted, mut malformed) = (0u64, 0u64, 0u64);
        let mut inc = Increments::default();
        // (customer, hour) → lines
        let mut lines_by_file: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
        for line in raw.split(|&b| b == b'\n') {
            if line.trim_ascii().is_empty() {
                continue;
            }
            let parsed = match batch.kind {
                Kind::Access => serde_json::from_slice::<AccessRecord>(line)
                    .ok()
                    .map(|r| (r.customer.clone(), r.ts_ms, Parsed::Access(r))),
                Kind::Dns => serde_json::from_slice::<DnsRecord>(line)
                    .ok()
                    .map(|r| (r.customer.clone(), r.ts_ms, Parsed::Dns(r))),
                Kind::Probe => serde_json::from_slice::<ProbeRecord>(line)
                    .ok()
                    .map(|r| (r.customer.clone(), r.ts_ms, Parsed::Probe(r))),
                _ => None,
            };
            let Some((customer, ts_ms, rec)) = parsed else {
                malformed += 1;
                continue;
            };
            if !self.scope.keeps(&customer) {
                misrouted += 1;
                continue;
            }
            // A clock far off (before 2000, or a day ahead) is not believed.
            let mut ts = (ts_ms / 1000) as i64;
            if !(946_684_800..=now + time::DAY).contains(&ts) {
                ts = now;
            }
            match &rec {
                Parsed::Access(r) => inc.access(ts, r),
                Parsed::Dns(r) => inc.dns(ts, r),
                Parsed::Probe(r) => inc.probe(ts, r),
            }
            let buf = lines_by_file
                .entry((customer, ts - ts.rem_euclid(HOUR)))
                .or_default();
            buf.extend_from_slice(line);
            buf.push(b'\n');
            kept += 1;
        }

        // Raw files first (synced), then one transaction.
        let mut new_lens = Vec::new();
        let mut raw_bytes = 0u64;
        for ((customer, hour), lines) in &lines_by_file {
            let rel = format!(
                "raw/{}/{}/{:02}-{}.jsonl.zst",
                customer_dir(customer),
                time::date(*hour),
                hour.rem_euclid(time::DAY) / HOUR,
                batch.kind.as_str()
            );
            let committed = w.files.get(&rel).copied().unwrap_or(0);
            let frame = zstd::bulk::compress(lines, 3).map_err(|source| StoreError::Io {
                path: self.dir.join(&rel),
                source,
            })?;
            let path = self.dir.join(&rel);
            let io = |source| StoreError::Io {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io)?;
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            // Anything past the committed length is a write that was never committed.
            f.set_len(committed).map_err(io)?;
            f.seek(SeekFrom::Start(committed)).map_err(io)?;
            f.write_all(&frame).map_err(io)?;
            f.sync_data().map_err(io)?;
            if committed == 0 {
                // A new file: make its directory entry durable too.
                if let Some(parent) = path.parent() {
                    fs::File::open(parent)
                        .and_then(|d| d.sync_all())
                        .map_err(io)?;
                }
            }
            raw_bytes += lines.len() as u64;
            new_lens.push((rel, committed + frame.len() as u64));
        }

        let tx = w.db.transaction().map_err(self.dbe())?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO http VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)
                     ON CONFLICT (res, customer, t, pop) DO UPDATE SET
                     requests=requests+excluded.requests, bytes=bytes+excluded.bytes,
                     hits=hits+excluded.hits, misses=misses+excluded.misses,
                     stale=stale+excluded.stale, pass=pass+excluded.pass,
                     errors=errors+excluded.errors, s2xx=s2xx+excluded.s2xx,
                     s3xx=s3xx+excluded.s3xx, s4xx=s4xx+excluded.s4xx,
                     s5xx=s5xx+excluded.s5xx, s_other=s_other+excluded.s_other,
                     ttfb_us=ttfb_us+excluded.ttfb_us",
                )
                .map_err(self.dbe())?;
            for ((res, t, customer, pop), h) in &inc.http {
                st.execute(params![
                    res,
                    t,
                    customer,
                    pop,
                    sql_u64(h.requests),
                    sql_u64(h.bytes),
                    sql_u64(h.hits),
                    sql_u64(h.misses),
                    sql_u64(h.stale),
                    sql_u64(h.pass),
                    sql_u64(h.errors),
                    sql_u64(h.s2xx),
                    sql_u64(h.s3xx),
                    sql_u64(h.s4xx),
                    sql_u64(h.s5xx),
                    sql_u64(h.s_other),
                    sql_u64(h.ttfb_us),
                ])
                .map_err(self.dbe())?;
            }
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO dns VALUES (?1,?2,?3,?4,?5,?6,?7,?8)
                     ON CONFLICT (res, customer, t, pop, domain, server, server_kind)
                     DO UPDATE SET answers=answers+excluded.answers",
                )
                .map_err(self.dbe())?;
            for ((res, t, customer, pop, domain, server, kind), n) in &inc.dns {
                st.execute(params![
                    res,
                    t,
                    customer,
                    pop,
                    domain,
                    server,
                    kind,
                    sql_u64(*n)
                ])
                .map_err(self.dbe())?;
            }
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO probe VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)
                     ON CONFLICT (res, customer, t, pop, target) DO UPDATE SET
                     checks=checks+excluded.checks, failures=failures+excluded.failures,
                     total_us=total_us+excluded.total_us, max_us=MAX(max_us, excluded.max_us)",
                )
                .map_err(self.dbe())?;
            for ((res, t, customer, pop, target), p) in &inc.probe {
                st.execute(params![
                    res,
                    t,
                    customer,
                    pop,
                    target,
                    sql_u64(p.checks),
                    sql_u64(p.failures),
                    sql_u64(p.total_us),
                    sql_u64(p.max_us)
                ])
                .map_err(self.dbe())?;
            }
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO raw_files VALUES (?1, ?2)
                     ON CONFLICT (path) DO UPDATE SET len=excluded.len",
                )
                .map_err(self.dbe())?;
            for (rel, len) in &new_lens {
                st.execute(params![rel, sql_u64(*len)])
                    .map_err(self.dbe())?;
            }
            tx.execute(
                "INSERT INTO streams VALUES (?1,?2,?3,?4,1,?5,?6,?7)
                 ON CONFLICT (stream) DO UPDATE SET source=excluded.source, kind=excluded.kind,
                 next_seq=excluded.next_seq, batches=batches+1, records=records+excluded.records,
                 missing=missing+excluded.missing, last_ms=excluded.last_ms",
                params![
                    batch.stream.as_slice(),
                    batch.source,
                    batch.kind.as_str(),
                    sql_u64(batch.seq + 1),
                    sql_u64(kept),
                    sql_u64(missing),
                    now.saturating_mul(1000)
                ],
            )
            .map_err(self.dbe())?;
        }
        tx.commit().map_err(self.dbe())?;
        w.streams.insert(batch.stream, batch.seq + 1);
        for (rel, len) in new_lens {
            w.files.insert(rel, len);
        }
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.records.fetch_add(kept, Ordering::Relaxed);
        c.misrouted.fetch_add(misrouted, Ordering::Relaxed);
        c.malformed.fetch_add(malformed, Ordering::Relaxed);
        c.bytes_raw.fetch_add(raw_bytes, Ordering::Relaxed);
        if misrouted > 0 {
            tracing::warn!(source = %batch.source, misrouted, "logd: records of customers another log server keeps were dropped (check [[log_servers]] customers)");
        }
        if malformed > 0 {
            tracing::warn!(source = %batch.source, malformed, "logd: unreadable records dropped");
        }
        Ok(Ingested::Stored {
            kept,
            misrouted,
            malformed,
        })
    }

    /// Deletes minute rollups and raw files past their retention.
    pub fn prune(&self, minute_retention: i64, raw_retention: i64) -> Result<(), StoreError> {
        let now = time::now();
        let mut w = lock(&self.w);
        let cut = now - minute_retention;
        for table in ["http", "dns", "probe"] {
            w.db.execute(
                &format!("DELETE FROM {table} WHERE res = ?1 AND t < ?2"),
                params![MINUTE, cut],
            )
            .map_err(self.dbe())?;
        }
        let cut_day = time::date(now - raw_retention);
        let old: Vec<String> = w
            .files
            .keys()
            .filter(|rel| {
                rel.split('/')
                    .nth(2)
                    .is_some_and(|day| day < cut_day.as_str())
            })
            .cloned()
            .collect();
        for rel in old {
            let _ = fs::remove_file(self.dir.join(&rel));
            w.db.execute("DELETE FROM raw_files WHERE path = ?1", params![rel])
                .map_err(self.dbe())?;
            w.files.remove(&rel);
        }
        Ok(())
    }

    /// Every stream seen.
    pub fn streams(&self) -> Result<Vec<StreamInfo>, StoreError> {
        let r = lock(&self.r);
        let mut st = r
            .prepare("SELECT stream, source, kind, next_seq, batches, records, missing, last_ms FROM streams ORDER BY source")
            .map_err(self.dbe())?;
        let rows = st
            .query_map([], |row| {
                Ok(StreamInfo {
                    stream: hex::encode(row.get::<_, Vec<u8>>(0)?),
                    source: row.get(1)?,
                    kind: row.get(2)?,
                    next_seq: row.get::<_, i64>(3)?.max(0) as u64,
                    batches: row.get::<_, i64>(4)?.max(0) as u64,
                    records: row.get::<_, i64>(5)?.max(0) as u64,
                    missing: row.get::<_, i64>(6)?.max(0) as u64,
                    last_ms: row.get::<_, i64>(7)?.max(0) as u64,
                })
            })
            .map_err(self.dbe())?;
        rows.collect::<Result<_, _>>().map_err(self.dbe())
    }

    /// HTTP sums per bucket of `step` seconds over `[from, to)`, read from the rollups of
    /// resolution `res`; `customer` None = every customer, `pop` None = every POP.
    /// Every bucket is present (zero when nothing happened).
    pub fn http_series(
        &self,
        customer: Option<&str>,
        pop: Option<&str>,
        res: i64,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<Vec<Point>, StoreError> {
        let step = step.max(res);
        let from = from - from.rem_euclid(step);
        let mut out: Vec<Point> = (0..)
            .map(|i| from + i * step)
            .take_while(|t| *t < to)
            .map(|t| Point {
                t,
                http: Http::default(),
            })
            .collect();
        let r = lock(&self.r);
        let sql = format!(
            "SELECT ((t - ?2) / ?5) AS b, {HTTP_SUMS} FROM http
             WHERE res = ?1 AND t >= ?2 AND t < ?3 AND (?4 IS NULL OR customer = ?4)
             AND (?6 IS NULL OR pop = ?6) GROUP BY b"
        );
        let mut st = r.prepare_cached(&sql).map_err(self.dbe())?;
        let rows = st
            .query_map(params![res, from, to, customer, step, pop], |row| {
                Ok((row.get::<_, i64>(0)?, read_http(row, 1)?))
            })
            .map_err(self.dbe())?;
        for row in rows {
            let (b, h) = row.map_err(self.dbe())?;
            if let Some(p) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) {
                p.http.add(&h);
            }
        }
        Ok(out)
    }

    /// [`Store::http_series`] split by POP.
    pub fn http_series_by_pop(
        &self,
        customer: Option<&str>,
        res: i64,
        from: i64,
        to: i64,
        step: i64,
    ) -> Result<BTreeMap<String, Vec<Point>>, StoreError> {
        let pops = self.pops(customer, res, from, to)?;
        let mut out = BTreeMap::new();
        for p in pops {
            let s = self.http_series(customer, Some(&p), res, from, to, step)?;
            out.insert(p, s);
        }
        Ok(out)
    }

    fn pops(
        &self,
        customer: Option<&str>,
        res: i64,
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, StoreError> {
        let r = lock(&self.r);
        let mut st = r
            .prepare_cached(
                "SELECT DISTINCT pop FROM http WHERE res = ?1 AND t >= ?2 AND t < ?3
                 AND (?4 IS NULL OR customer = ?4) ORDER BY pop",
            )
            .map_err(self.dbe())?;
        let rows = st
            .query_map(params![res, from, to, customer], |row| {
                row.get::<_, String>(0)
            })
            .map_err(self.dbe())?;
        rows.collect::<Result<_, _>>().map_err(self.dbe())
    }

    /// Customers with HTTP rollups.
    pub fn customers(&self) -> Result<Vec<String>, StoreError> {
        let r = lock(&self.r);
        let mut st = r
            .prepare_cached("SELECT DISTINCT customer FROM http WHERE res = ?1 ORDER BY customer")
            .map_err(self.dbe())?;
        let rows = st
            .query_map(params![HOUR], |row| row.get::<_, String>(0))
            .map_err(self.dbe())?;
        rows.collect::<Result<_, _>>().map_err(self.dbe())
    }

    /// Totals of a customer since `since` (minute rollups when they reach back that far).
    pub fn stats(
        &self,
        customer: &str,
        since: i64,
        minute_retention: i64,
    ) -> Result<Stats, StoreError> {
        let now = time::now();
        let (res, from) = if now - since <= minute_retention {
            (MINUTE, since - since.rem_euclid(MINUTE))
        } else {
            (HOUR, since - since.rem_euclid(HOUR))
        };
        let to = now + HOUR;
        let r = lock(&self.r);
        let mut per_pop = BTreeMap::new();
        let mut total = Http::default();
        {
            let sql = format!(
                "SELECT pop, {HTTP_SUMS} FROM http WHERE res = ?1 AND customer = ?2 AND t >= ?3 AND t < ?4 GROUP BY pop"
            );
            let mut st = r.prepare_cached(&sql).map_err(self.dbe())?;
            let rows = st
                .query_map(params![res, customer, from, to], |row| {
                    Ok((row.get::<_, String>(0)?, read_http(row, 1)?))
                })
                .map_err(self.dbe())?;
            for row in rows {
                let (pop, h) = row.map_err(self.dbe())?;
                total.add(&h);
                per_pop.insert(pop, h);
            }
        }
        let dns = {
            let mut st = r
                .prepare_cached(
                    "SELECT pop, domain, server, server_kind, SUM(answers) FROM dns
                     WHERE res = ?1 AND customer = ?2 AND t >= ?3 AND t < ?4
                     GROUP BY pop, domain, server, server_kind ORDER BY pop, domain, server",
                )
                .map_err(self.dbe())?;
            let rows = st
                .query_map(params![res, customer, from, to], |row| {
                    Ok(DnsRow {
                        pop: row.get(0)?,
                        domain: row.get(1)?,
                        server: row.get(2)?,
                        server_kind: row.get(3)?,
                        answers: row.get::<_, i64>(4)?.max(0) as u64,
                    })
                })
                .map_err(self.dbe())?;
            rows.collect::<Result<Vec<_>, _>>().map_err(self.dbe())?
        };
        let probes = {
            let mut st = r
                .prepare_cached(
                    "SELECT pop, target, SUM(checks), SUM(failures), SUM(total_us), MAX(max_us) FROM probe
                     WHERE res = ?1 AND customer = ?2 AND t >= ?3 AND t < ?4
                     GROUP BY pop, target ORDER BY target, pop",
                )
                .map_err(self.dbe())?;
            let rows = st
                .query_map(params![res, customer, from, to], |row| {
                    let g = |i: usize| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok(ProbeRow {
                        pop: row.get(0)?,
                        target: row.get(1)?,
                        probe: Probe {
                            checks: g(2)?,
                            failures: g(3)?,
                            total_us: g(4)?,
                            max_us: g(5)?,
                        },
                    })
                })
                .map_err(self.dbe())?;
            rows.collect::<Result<Vec<_>, _>>().map_err(self.dbe())?
        };
        Ok(Stats {
            customer: customer.to_string(),
            since: from,
            until: now,
            resolution: if res == MINUTE { "minute" } else { "hour" }.into(),
            hit_ratio: total.hit_ratio(),
            total,
            per_pop,
            dns,
            probes,
        })
    }

    /// A customer's bill for `month`: bytes served (every response's head and body) ×
    /// `fee_per_gb` per 10^9 bytes.
    pub fn bill(&self, customer: &str, month: Month, fee_per_gb: f64) -> Result<Bill, StoreError> {
        let (from, to) = (month.start(), month.next().start());
        let r = lock(&self.r);
        let mut st = r
            .prepare_cached(
                "SELECT pop, SUM(requests), SUM(bytes) FROM http
                 WHERE res = ?1 AND customer = ?2 AND t >= ?3 AND t < ?4 GROUP BY pop ORDER BY pop",
            )
            .map_err(self.dbe())?;
        let rows = st
            .query_map(params![HOUR, customer, from, to], |row| {
                Ok(PopBytes {
                    pop: row.get(0)?,
                    requests: row.get::<_, i64>(1)?.max(0) as u64,
                    bytes: row.get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .map_err(self.dbe())?;
        let per_pop: Vec<PopBytes> = rows.collect::<Result<_, _>>().map_err(self.dbe())?;
        let bytes: u64 = per_pop.iter().map(|p| p.bytes).sum();
        let requests = per_pop.iter().map(|p| p.requests).sum();
        let gb = bytes as f64 / 1e9;
        Ok(Bill {
            customer: customer.to_string(),
            month: month.to_string(),
            requests,
            bytes,
            gb,
            fee_per_gb,
            amount: (gb * fee_per_gb * 100.0).round() / 100.0,
            partial: time::now() < to,
            per_pop,
        })
    }

    /// The raw records of one customer-hour file (`kind` access, dns or probe), at most
    /// `limit` bytes of them.
    pub fn raw(
        &self,
        customer: &str,
        hour: i64,
        kind: Kind,
        limit: usize,
    ) -> Result<Vec<u8>, StoreError> {
        if !safe_name(customer) {
            return Err(StoreError::Query(format!(
                "{customer:?} is not a customer name"
            )));
        }
        let hour = hour - hour.rem_euclid(HOUR);
        let rel = format!(
            "raw/{}/{}/{:02}-{}.jsonl.zst",
            customer_dir(customer),
            time::date(hour),
            hour.rem_euclid(time::DAY) / HOUR,
            kind.as_str()
        );
        let committed = lock(&self.w).files.get(&rel).copied();
        let Some(len) = committed else {
            return Ok(Vec::new());
        };
        let path = self.dir.join(&rel);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let f = fs::File::open(&path).map_err(io)?;
        let mut dec = zstd::stream::read::Decoder::new(f.take(len)).map_err(io)?;
        let mut out = Vec::new();
        (&mut dec)
            .take(limit as u64)
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    }

    /// Bytes of the database files.
    pub fn db_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|s| {
                fs::metadata(format!("{}{s}", self.db_path.display()))
                    .ok()
                    .map(|m| m.len())
            })
            .sum()
    }

    /// The oldest hour with HTTP rollups of `customer`, if any.
    pub fn first_hour(&self, customer: &str) -> Result<Option<i64>, StoreError> {
        let r = lock(&self.r);
        r.query_row(
            "SELECT MIN(t) FROM http WHERE res = ?1 AND customer = ?2",
            params![HOUR, customer],
            |row| row.get::<_, Option<i64>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(self.dbe())
    }
}

enum Parsed {
    Access(AccessRecord),
    Dns(DnsRecord),
    Probe(ProbeRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            managed: ["shop".to_string()].into(),
            elsewhere: ["other".to_string()].into(),
            others: true,
        }
    }

    fn access(
        ts_ms: u64,
        customer: &str,
        pop: &str,
        status: u16,
        bytes: u64,
        cache: &str,
    ) -> String {
        serde_json::to_string(&AccessRecord {
            ts_ms,
            pop: pop.into(),
            customer: customer.into(),
            client: "127.0.0.1:4000".into(),
            method: "GET".into(),
            host: "img.shop.example".into(),
            path: "/a".into(),
            status,
            bytes,
            cache: cache.into(),
            origin: None,
            ttfb_us: 100,
            total_us: 200,
            origin_us: None,
        })
        .unwrap()
    }

    fn batch(stream: u8, seq: u64, lines: &[String]) -> Batch {
        let raw = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        Batch::seal(
            Kind::Access,
            [stream; 16],
            seq,
            0,
            lines.len() as u32,
            "iad1/cache",
            raw.as_bytes(),
        )
        .unwrap()
    }

    fn now_ms() -> u64 {
        (time::now() * 1000) as u64
    }

    #[test]
    fn a_batch_counts_once_and_its_duplicate_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = now_ms();
        let b = batch(
            1,
            1,
            &[
                access(t, "shop", "iad1", 200, 1000, "HIT"),
                access(t, "shop", "iad1", 200, 500, "MISS"),
                access(t, "shop", "fra1", 404, 70, "ERROR"),
                access(t, "other", "iad1", 200, 9999, "HIT"),
                "{\"customer\":\"shop\",\"not\":\"an access record\"}".into(),
            ],
        );
        {
            let s = Store::open(d.path(), scope()).unwrap();
            assert_eq!(
                s.ingest(&b).unwrap(),
                Ingested::Stored {
                    kept: 3,
                    misrouted: 1,
                    malformed: 1
                }
            );
            assert_eq!(s.ingest(&b).unwrap(), Ingested::Duplicate);
        }
        // The stream's number survives a restart: still a duplicate.
        let s = Store::open(d.path(), scope()).unwrap();
        assert_eq!(s.ingest(&b).unwrap(), Ingested::Duplicate);
        let st = s.stats("shop", time::now() - 600, 3 * time::DAY).unwrap();
        assert_eq!(st.resolution, "minute");
        assert_eq!(
            (
                st.total.requests,
                st.total.bytes,
                st.total.hits,
                st.total.misses,
                st.total.errors
            ),
            (3, 1570, 1, 1, 1)
        );
        assert_eq!((st.total.s2xx, st.total.s4xx), (2, 1));
        assert_eq!(st.per_pop["iad1"].requests, 2);
        assert_eq!(st.per_pop["fra1"].bytes, 70);
        // Hour rollups hold the same sums.
        let st = s
            .stats("shop", time::now() - 10 * time::DAY, 3 * time::DAY)
            .unwrap();
        assert_eq!(st.resolution, "hour");
        assert_eq!((st.total.requests, st.total.bytes), (3, 1570));
        // The other customer's record was not kept.
        assert_eq!(
            s.stats("other", time::now() - 600, 3 * time::DAY)
                .unwrap()
                .total
                .requests,
            0
        );
        let raw = s.raw("shop", time::now(), Kind::Access, 1 << 20).unwrap();
        let lines: Vec<AccessRecord> = raw
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|r| r.customer == "shop"));
        let streams = s.streams().unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!((streams[0].next_seq, streams[0].records), (2, 3));
    }

    #[test]
    fn a_write_that_was_never_committed_is_cut_back_at_open() {
        let d = tempfile::tempdir().unwrap();
        let t = now_ms();
        let s = Store::open(d.path(), scope()).unwrap();
        s.ingest(&batch(2, 1, &[access(t, "shop", "iad1", 200, 10, "HIT")]))
            .unwrap();
        let hour = time::now() - time::now().rem_euclid(HOUR);
        let rel = format!(
            "raw/shop/{}/{:02}-access.jsonl.zst",
            time::date(hour),
            hour.rem_euclid(time::DAY) / HOUR
        );
        drop(s);
        // A crash between the raw write and the commit: bytes past the committed length,
        // and a file no commit knows.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join(&rel))
            .unwrap();
        f.write_all(b"torn half of a zstd frame").unwrap();
        drop(f);
        let stray = d.path().join("raw/shop/1999-01-01/00-access.jsonl.zst");
        fs::create_dir_all(stray.parent().unwrap()).unwrap();
        fs::write(&stray, b"uncommitted").unwrap();
        let s = Store::open(d.path(), scope()).unwrap();
        assert!(!stray.exists());
        s.ingest(&batch(2, 2, &[access(t, "shop", "iad1", 200, 20, "MISS")]))
            .unwrap();
        let raw = s.raw("shop", time::now(), Kind::Access, 1 << 20).unwrap();
        let bytes: Vec<u64> = raw
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<AccessRecord>(l).unwrap().bytes)
            .collect();
        assert_eq!(bytes, vec![10, 20]);
        // The whole file decodes as zstd: nothing torn is left in it.
        let all = zstd::decode_all(fs::File::open(d.path().join(&rel)).unwrap()).unwrap();
        assert_eq!(all, raw);
    }

    #[test]
    fn skipped_batches_are_counted_and_unreadable_ones_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let t = now_ms();
        let s = Store::open(d.path(), scope()).unwrap();
        s.ingest(&batch(3, 1, &[access(t, "shop", "iad1", 200, 1, "HIT")]))
            .unwrap();
        s.ingest(&batch(3, 4, &[access(t, "shop", "iad1", 200, 1, "HIT")]))
            .unwrap();
        assert_eq!(s.counters.gaps.load(Ordering::Relaxed), 2);
        // An authenticated batch whose payload is not zstd: kept aside, the stream moves on.
        let mut bad = batch(3, 5, &[access(t, "shop", "iad1", 200, 1, "HIT")]);
        bad.payload = b"not zstd".to_vec();
        assert!(matches!(
            s.ingest(&bad).unwrap(),
            Ingested::Stored { kept: 0, .. }
        ));
        assert!(
            d.path()
                .join(format!("bad/{}-5.zst", hex::encode([3u8; 16])))
                .exists()
        );
        assert_eq!(s.ingest(&bad).unwrap(), Ingested::Duplicate);
        let st = &s.streams().unwrap()[0];
        assert_eq!((st.next_seq, st.missing, st.records), (6, 2, 2));
    }

    #[test]
    fn dns_answers_and_probe_results_roll_up_per_pop_and_server() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), scope()).unwrap();
        let t = now_ms();
        let dns = |server: &str, answers: u64| {
            serde_json::to_string(&DnsRecord {
                ts_ms: t,
                from_ms: t - 5000,
                pop: "iad1".into(),
                customer: "shop".into(),
                domain: "www.shop.example".into(),
                view: "us".into(),
                qtype: "A".into(),
                server: server.into(),
                server_kind: "origin".into(),
                answers,
            })
            .unwrap()
        };
        let lines = [
            dns("shop/east", 7),
            dns("shop/east", 5),
            dns("shop/west", 1),
        ];
        let raw: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let b = Batch::seal(Kind::Dns, [5; 16], 1, t, 3, "iad1/dns", raw.as_bytes()).unwrap();
        assert!(matches!(
            s.ingest(&b).unwrap(),
            Ingested::Stored { kept: 3, .. }
        ));
        let probe = |ok: bool, us: u64| {
            serde_json::to_string(&ProbeRecord {
                ts_ms: t,
                pop: "iad1".into(),
                customer: "shop".into(),
                target: "shop/east".into(),
                ok,
                total_us: us,
                status: Some(200),
                error: None,
            })
            .unwrap()
        };
        let raw = format!("{}\n{}\n", probe(true, 100), probe(false, 900));
        let b = Batch::seal(Kind::Probe, [6; 16], 1, t, 2, "iad1/probe", raw.as_bytes()).unwrap();
        s.ingest(&b).unwrap();
        let st = s.stats("shop", time::now() - 600, 3 * time::DAY).unwrap();
        let answers: Vec<(&str, u64)> = st
            .dns
            .iter()
            .map(|r| (r.server.as_str(), r.answers))
            .collect();
        assert_eq!(answers, vec![("shop/east", 12), ("shop/west", 1)]);
        assert_eq!(st.probes.len(), 1);
        let p = st.probes[0].probe;
        assert_eq!(
            (p.checks, p.failures, p.total_us, p.max_us),
            (2, 1, 1000, 900)
        );
        assert_eq!(st.total.requests, 0);
    }

    #[test]
    fn a_bill_is_the_months_bytes_times_the_fee() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), scope()).unwrap();
        let oct = (Month::parse("2026-10").unwrap().start() + 5 * time::DAY) as u64 * 1000;
        let sep = (Month::parse("2026-09").unwrap().start() + 3 * HOUR) as u64 * 1000;
        s.ingest(&batch(
            4,
            1,
            &[
                access(oct, "shop", "iad1", 200, 1_500_000_000, "HIT"),
                access(oct + 3_600_000, "shop", "fra1", 200, 500_000_000, "MISS"),
                access(sep, "shop", "iad1", 200, 7, "HIT"),
            ],
        ))
        .unwrap();
        let b = s
            .bill("shop", Month::parse("2026-10").unwrap(), 0.02)
            .unwrap();
        assert_eq!((b.requests, b.bytes), (2, 2_000_000_000));
        assert_eq!(b.amount, 0.04);
        assert!(!b.partial);
        assert_eq!(b.per_pop.len(), 2);
        let b = s
            .bill("shop", Month::parse("2026-09").unwrap(), 0.02)
            .unwrap();
        assert_eq!((b.requests, b.bytes, b.amount), (1, 7, 0.0));
        let b = s
            .bill("shop", Month::parse("2026-08").unwrap(), 0.02)
            .unwrap();
        assert_eq!(b.requests, 0);
    }
}
