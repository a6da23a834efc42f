//! The service's database: SQLite in a file (the embedded default) or
//! PostgreSQL (scale-out). Both run the same SQL: `$1`-style parameters in
//! increasing order (SQLite numbers named parameters by first appearance),
//! `BIGINT` and `TEXT` columns only, single-statement updates.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {message}")]
    Open { url: String, message: String },
    #[error("database query failed: {0}")]
    Query(String),
    /// Locked by another writer, or the connection dropped: the same
    /// statement may well succeed a moment later.
    #[error("database busy: {0}")]
    Busy(String),
}

impl DbError {
    /// Whether trying the same statement again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Busy(_))
    }
}

fn sqlite_error(error: rusqlite::Error) -> DbError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            DbError::Busy(error.to_string())
        }
        _ => DbError::Query(error.to_string()),
    }
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(Some(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(Some(value.to_string()))
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(Some(value))
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(Some(value.clone()))
    }
}

impl From<Option<String>> for Value {
    fn from(value: Option<String>) -> Value {
        Value::Text(value)
    }
}

impl From<Option<&str>> for Value {
    fn from(value: Option<&str>) -> Value {
        Value::Text(value.map(str::to_string))
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, column: usize) -> i64 {
        self.opt_int(column).unwrap_or(0)
    }

    pub fn opt_int(&self, column: usize) -> Option<i64> {
        match self.0.get(column) {
            Some(Value::Int(value)) => *value,
            Some(Value::Text(Some(text))) => text.parse().ok(),
            _ => None,
        }
    }

    pub fn text(&self, column: usize) -> String {
        self.opt_text(column).unwrap_or_default()
    }

    pub fn opt_text(&self, column: usize) -> Option<String> {
        match self.0.get(column) {
            Some(Value::Text(value)) => value.clone(),
            Some(Value::Int(Some(value))) => Some(value.to_string()),
            _ => None,
        }
    }
}

/// The schema: one list of statements per version, each applied once, in
/// order, under a lock (`schema_version` says how far a database is), so
/// processes starting together on a fresh database do not race.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the records.
    &[
        "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
     hash TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS platforms (name TEXT PRIMARY KEY, current_version BIGINT NOT NULL, \
     updated_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS platform_versions (platform TEXT NOT NULL, version BIGINT NOT NULL, \
     template TEXT NOT NULL, libs TEXT, probe TEXT, change TEXT NOT NULL, created_by TEXT NOT NULL, \
     created_at BIGINT NOT NULL, PRIMARY KEY (platform, version))",
        "CREATE TABLE IF NOT EXISTS apps (app_id TEXT NOT NULL, version TEXT NOT NULL, image TEXT NOT NULL, \
     metadata TEXT, options TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (app_id, version))",
        "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, state TEXT NOT NULL, \
     request TEXT NOT NULL, platform TEXT NOT NULL, platform_version BIGINT NOT NULL, app_id TEXT, \
     app_version TEXT, progress BIGINT NOT NULL, stage TEXT, error_code TEXT, error TEXT, \
     attempts BIGINT NOT NULL, worker TEXT, bundle_id TEXT, created_at BIGINT NOT NULL, \
     updated_at BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS bundles (id TEXT PRIMARY KEY, job_id TEXT NOT NULL, key TEXT NOT NULL, \
     app_id TEXT NOT NULL, app_version TEXT, platform TEXT NOT NULL, platform_version BIGINT NOT NULL, \
     format TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL, signature TEXT NOT NULL, \
     location TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS bundles_by_app ON bundles (app_id, app_version, platform)",
        "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at)",
    ],
    // 2: tokens bound to a platform, revoked rather than deleted, with their
    // last use and expiry; a platform's review policy; held versions.
    &[
        "ALTER TABLE tokens ADD COLUMN platform TEXT",
        "ALTER TABLE tokens ADD COLUMN device TEXT",
        "ALTER TABLE tokens ADD COLUMN revoked_at BIGINT",
        "ALTER TABLE tokens ADD COLUMN last_used_at BIGINT",
        "ALTER TABLE tokens ADD COLUMN expires_at BIGINT",
        "ALTER TABLE platforms ADD COLUMN auto_accept BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE platforms ADD COLUMN keep_versions BIGINT NOT NULL DEFAULT 20",
        "ALTER TABLE platform_versions ADD COLUMN state TEXT NOT NULL DEFAULT 'accepted'",
    ],
    // 3: a token in use is known by its name: names of tokens in use are
    // unique (earlier duplicates get their id appended).
    &[
        "UPDATE tokens SET name = name || ' (' || id || ')' WHERE revoked_at IS NULL AND id NOT IN \
     (SELECT MIN(id) FROM tokens WHERE revoked_at IS NULL GROUP BY name)",
        "CREATE UNIQUE INDEX IF NOT EXISTS tokens_name_in_use ON tokens (name) WHERE revoked_at IS NULL",
    ],
];

/// Statements are prepared once and kept: without the query planner
/// stability guarantee, SQLite prepares a cached statement again whenever a
/// new value is bound where the value might change the plan (`LIMIT`,
/// partial indexes), a fifth of a cached lookup's time.
fn keep_plans(connection: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    connection.set_prepared_statement_cache_capacity(64);
    connection.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// A query's rows from a SQLite connection.
fn sqlite_rows(connection: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, rusqlite::Error> {
    let mut statement = connection.prepare_cached(sql)?;
    let columns = statement.column_count();
    let rows = statement.query_map(rusqlite::params_from_iter(params.iter().map(sqlite_value)), |row| {
        let mut values = Vec::with_capacity(columns);
        for column in 0..columns {
            values.push(match row.get_ref(column)? {
                rusqlite::types::ValueRef::Null => Value::Text(None),
                rusqlite::types::ValueRef::Integer(i) => Value::Int(Some(i)),
                rusqlite::types::ValueRef::Real(f) => Value::Int(Some(f as i64)),
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                    Value::Text(Some(String::from_utf8_lossy(t).into_owned()))
                }
            });
        }
        Ok(Row(values))
    })?;
    rows.collect()
}

/// The advisory lock PostgreSQL migrations run under.
const MIGRATION_LOCK: i64 = 0x6275_6e64_6c65;

/// A database connection (or a few), shared by the service's tasks.
#[derive(Clone)]
pub struct Db {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sqlite(Arc<Sqlite>),
    Postgres(Arc<Postgres>),
}

/// SQLite in WAL mode: one writer, used on the blocking pool (its commits
/// wait for the disk), and a few read-only connections queried right on
/// the calling task: a lookup's reads take microseconds, a hop to the
/// blocking pool for each took longer than the read.
struct Sqlite {
    writer: Arc<Mutex<rusqlite::Connection>>,
    readers: Vec<Mutex<rusqlite::Connection>>,
}

impl Sqlite {
    /// A free reader, else the first (its holder is as brief).
    fn reader(&self) -> Option<std::sync::MutexGuard<'_, rusqlite::Connection>> {
        if self.readers.is_empty() {
            return None;
        }
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return Some(guard);
            }
        }
        Some(self.readers[0].lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct Postgres {
    url: String,
    client: RwLock<Arc<tokio_postgres::Client>>,
}

impl Db {
    /// Opens `postgres://...` / `postgresql://...`, or else a SQLite file
    /// (`sqlite:PATH` or a plain path), and creates the schema.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let client = pg_connect(url).await?;
            Db {
                inner: Inner::Postgres(Arc::new(Postgres {
                    url: url.to_string(),
                    client: RwLock::new(Arc::new(client)),
                })),
            }
        } else {
            let path = url.strip_prefix("sqlite:").unwrap_or(url).to_string();
            let open_error = |e: rusqlite::Error| DbError::Open {
                url: url.to_string(),
                message: e.to_string(),
            };
            let connection = tokio::task::spawn_blocking(move || {
                // Tokens' hashes and the platforms live here: the owner's only.
                // SQLite gives its WAL and shared-memory files the same mode.
                private_file(Path::new(&path)).map_err(|e| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                        Some(e.to_string()),
                    )
                })?;
                let connection = rusqlite::Connection::open(&path)?;
                // WAL: readers do not block the writer; FULL: a committed
                // row survives a power cut (a finished bundle is never lost).
                connection.pragma_update(None, "journal_mode", "WAL")?;
                connection.pragma_update(None, "synchronous", "FULL")?;
                connection.busy_timeout(std::time::Duration::from_secs(10))?;
                keep_plans(&connection)?;
                Ok::<_, rusqlite::Error>(connection)
            })
            .await
            .map_err(|e| DbError::Open {
                url: url.to_string(),
                message: e.to_string(),
            })?
            .map_err(open_error)?;
            Db {
                inner: Inner::Sqlite(Arc::new(Sqlite {
                    writer: Arc::new(Mutex::new(connection)),
                    readers: Vec::new(),
                })),
            }
        };
        db.migrate().await?;
        // Readers once the schema exists (an in-memory database has no
        // file to share: its writer reads too).
        if let Inner::Sqlite(sqlite) = &db.inner
            && !url.contains(":memory:")
        {
            let path = url.strip_prefix("sqlite:").unwrap_or(url).to_string();
            let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
            let opened = tokio::task::spawn_blocking(move || {
                (0..readers)
                    .map(|_| {
                        let flags =
                            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                        let connection = rusqlite::Connection::open_with_flags(&path, flags)?;
                        connection.busy_timeout(std::time::Duration::from_secs(10))?;
                        keep_plans(&connection)?;
                        Ok(Mutex::new(connection))
                    })
                    .collect::<Result<Vec<_>, rusqlite::Error>>()
            })
            .await
            .map_err(|e| DbError::Open {
                url: url.to_string(),
                message: e.to_string(),
            })?
            .map_err(|e| DbError::Open {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            let sqlite = Arc::new(Sqlite {
                writer: sqlite.writer.clone(),
                readers: opened,
            });
            return Ok(Db {
                inner: Inner::Sqlite(sqlite),
            });
        }
        Ok(db)
    }

    /// Brings the schema to the latest version.
    async fn migrate(&self) -> Result<(), DbError> {
        let error = |what: &str, e: String| DbError::Query(format!("migrating the schema: {what}: {e}"));
        match &self.inner {
            Inner::Sqlite(sqlite) => {
                let connection = sqlite.writer.clone();
                tokio::task::spawn_blocking(move || {
                    let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                    let transaction = connection
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .map_err(|e| error("lock", e.to_string()))?;
                    transaction
                        .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                        .map_err(|e| error("schema_version", e.to_string()))?;
                    let current: i64 = transaction
                        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |row| {
                            row.get(0)
                        })
                        .map_err(|e| error("schema_version", e.to_string()))?;
                    for (version, statements) in pending(current) {
                        for statement in statements {
                            transaction
                                .execute_batch(statement)
                                .map_err(|e| error(statement, e.to_string()))?;
                        }
                        transaction
                            .execute("INSERT INTO schema_version (version) VALUES (?1)", [version])
                            .map_err(|e| error("schema_version", e.to_string()))?;
                    }
                    transaction.commit().map_err(|e| error("commit", e.to_string()))
                })
                .await
                .map_err(|e| error("thread", e.to_string()))?
            }
            Inner::Postgres(pg) => {
                let mut client = pg_connect(&pg.url).await?;
                client
                    .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(pg_error)?;
                let result = async {
                    let transaction = client.transaction().await.map_err(pg_error)?;
                    transaction
                        .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                        .await
                        .map_err(pg_error)?;
                    let current: i64 = transaction
                        .query_one("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version", &[])
                        .await
                        .map_err(pg_error)?
                        .get(0);
                    for (version, statements) in pending(current) {
                        for statement in statements {
                            transaction.batch_execute(statement).await.map_err(pg_error)?;
                        }
                        transaction
                            .execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])
                            .await
                            .map_err(pg_error)?;
                    }
                    transaction.commit().await.map_err(pg_error)
                }
                .await;
                let _ = client
                    .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                    .await;
                result
            }
        }
    }

    /// Which engine, for messages and metrics.
    pub fn engine(&self) -> &'static str {
        match self.inner {
            Inner::Sqlite(_) => "sqlite",
            Inner::Postgres(_) => "postgresql",
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        match &self.inner {
            Inner::Sqlite(sqlite) => {
                let connection = sqlite.writer.clone();
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || {
                    let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                    let mut statement = connection.prepare_cached(&sql)?;
                    let changed = statement.execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))?;
                    Ok::<_, rusqlite::Error>(changed as u64)
                })
                .await
                .map_err(|e| DbError::Query(e.to_string()))?
                .map_err(sqlite_error)
            }
            Inner::Postgres(pg) => {
                let client = pg.client().await?;
                let params = pg_params(&params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                client.execute(sql, &refs).await.map_err(pg_error)
            }
        }
    }

    /// Runs a query; returns its rows.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        match &self.inner {
            Inner::Sqlite(sqlite) => {
                // Reads on a reader; what writes (`... RETURNING`) on the writer.
                if let Some(reader) = sqlite.reader()
                    && reader.prepare_cached(sql).is_ok_and(|statement| statement.readonly())
                {
                    return sqlite_rows(&reader, sql, &params).map_err(sqlite_error);
                }
                let connection = sqlite.writer.clone();
                let sql = sql.to_string();
                tokio::task::spawn_blocking(move || {
                    let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
                    sqlite_rows(&connection, &sql, &params)
                })
                .await
                .map_err(|e| DbError::Query(e.to_string()))?
                .map_err(sqlite_error)
            }
            Inner::Postgres(pg) => {
                let client = pg.client().await?;
                let params = pg_params(&params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p.as_ref() as _).collect();
                let rows = client.query(sql, &refs).await.map_err(pg_error)?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }
}

/// Creates `path` (and any WAL and shared-memory files beside it) readable
/// and writable by the owner only, or takes other users' access away.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The migrations after version `current`, with their version numbers.
fn pending(current: i64) -> impl Iterator<Item = (i64, &'static [&'static str])> {
    MIGRATIONS
        .iter()
        .enumerate()
        .map(|(i, statements)| (i as i64 + 1, *statements))
        .filter(move |(version, _)| *version > current)
}

fn sqlite_value(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Int(Some(i)) => rusqlite::types::Value::Integer(*i),
        Value::Text(Some(t)) => rusqlite::types::Value::Text(t.clone()),
        Value::Int(None) | Value::Text(None) => rusqlite::types::Value::Null,
    }
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    params
        .iter()
        .map(|value| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
            match value {
                Value::Int(i) => Box::new(*i),
                Value::Text(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

fn pg_row(row: &tokio_postgres::Row) -> Row {
    use tokio_postgres::types::Type;
    Row(row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| match *column.type_() {
            Type::INT8 => Value::Int(row.get::<_, Option<i64>>(i)),
            Type::INT4 => Value::Int(row.get::<_, Option<i32>>(i).map(i64::from)),
            Type::INT2 => Value::Int(row.get::<_, Option<i16>>(i).map(i64::from)),
            _ => Value::Text(row.try_get::<_, Option<String>>(i).ok().flatten()),
        })
        .collect())
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| DbError::Open {
                url: crate::redact(url),
                message: bundlegen_protocol::error_chain(&e),
            })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgresql connection closed: {e}");
        }
    });
    Ok(client)
}

fn pg_error(error: tokio_postgres::Error) -> DbError {
    use tokio_postgres::error::SqlState;
    let message = bundlegen_protocol::error_chain(&error);
    let retryable = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    match error.code() {
        Some(code) if retryable.contains(code) => DbError::Busy(message),
        // No server error code: the connection itself failed.
        None => DbError::Busy(message),
        Some(_) => DbError::Query(message),
    }
}

impl Postgres {
    /// The shared client; a closed connection is replaced here.
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, DbError> {
        let client = self.client.read().await.clone();
        if !client.is_closed() {
            return Ok(client);
        }
        let mut slot = self.client.write().await;
        if slot.is_closed() {
            *slot = Arc::new(pg_connect(&self.url).await?);
        }
        Ok(slot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_runs_the_shared_sql() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("db.sqlite").to_str().unwrap()).await.unwrap();
        let insert = "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5) \
                      ON CONFLICT (id) DO NOTHING";
        let row = |id: &str| {
            vec![
                id.into(),
                "ci".into(),
                "admin".into(),
                format!("h{id}").into(),
                7.into(),
            ]
        };
        assert_eq!(db.execute(insert, row("a")).await.unwrap(), 1);
        assert_eq!(db.execute(insert, row("a")).await.unwrap(), 0, "conflicts do nothing");
        let rows = db
            .query(
                "SELECT id, created_at, name FROM tokens WHERE role = $1",
                vec!["admin".into()],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].text(0), rows[0].int(1)), ("a".to_string(), 7));
        let updated = db
            .query(
                "UPDATE tokens SET name = $1 WHERE id = $2 RETURNING name",
                vec!["renamed".into(), "a".into()],
            )
            .await
            .unwrap();
        assert_eq!(updated[0].text(0), "renamed");
        // Reopening keeps the data and the schema is created only once.
        drop(db);
        let db = Db::open(dir.path().join("db.sqlite").to_str().unwrap()).await.unwrap();
        assert_eq!(db.query("SELECT id FROM tokens", vec![]).await.unwrap().len(), 1);
        let versions = db.query("SELECT version FROM schema_version", vec![]).await.unwrap();
        assert_eq!(versions.len(), MIGRATIONS.len(), "each migration once");
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{:?} is the owner's only", entry.file_name());
        }
    }

    /// Statements stay compiled: a reader's cached statement is not
    /// re-prepared when its parameters are bound again (SQLite does that
    /// where the bound value might change the plan, unless the planner is
    /// told to keep its plans), which cost a fifth of a lookup's time.
    #[tokio::test]
    async fn cached_statements_are_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("db.sqlite").to_str().unwrap()).await.unwrap();
        let lookups = [
            "SELECT id, name, role FROM tokens WHERE hash = $1",
            "SELECT current_version FROM platforms WHERE name = $1",
            "SELECT image, metadata FROM apps WHERE app_id = $1 AND version = $2",
            "SELECT id FROM bundles WHERE key = $1 ORDER BY created_at DESC LIMIT 1",
        ];
        for round in 0..3 {
            for sql in lookups {
                let params = (0..sql.matches('$').count())
                    .map(|i| format!("v{round}{i}").into())
                    .collect();
                db.query(sql, params).await.unwrap();
            }
        }
        let Inner::Sqlite(sqlite) = &db.inner else {
            unreachable!()
        };
        for reader in &sqlite.readers {
            let reader = reader.lock().unwrap();
            for sql in lookups {
                let statement = reader.prepare_cached(sql).unwrap();
                assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0, "{sql}");
            }
        }
    }

    /// A database made before migrations were counted (the first schema,
    /// no schema_version) is brought up to date.
    #[tokio::test]
    async fn a_database_of_the_first_schema_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            for statement in MIGRATIONS[0] {
                connection.execute_batch(statement).unwrap();
            }
            connection
                .execute(
                    "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ('t', 'n', 'admin', 'h', 1)",
                    [],
                )
                .unwrap();
        }
        let db = Db::open(path.to_str().unwrap()).await.unwrap();
        let rows = db
            .query("SELECT id, platform, revoked_at FROM tokens", vec![])
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].text(0), rows[0].opt_text(1)), ("t".to_string(), None));
    }
}
