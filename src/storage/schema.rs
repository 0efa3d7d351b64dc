//! The database layout, created in one place: Optuna's RDB tables exactly as Optuna 5.0
//! creates them (schema version 12, alembic head `v3.2.0.a`), so Optuna and optuna-dashboard
//! read our studies, plus our own `sft_` tables, which Optuna ignores.
//!
//! Our own changes are an append-only list of migrations numbered by `PRAGMA user_version`.
//! NEVER reorder, edit or remove an entry: add a new one at the end. A database whose
//! `user_version` (or Optuna `schema_version`) is newer than this build knows is refused
//! before anything is written to it.

use rusqlite::{Connection, OptionalExtension};

/// Optuna's `version_info.schema_version` that this layout matches.
pub const OPTUNA_SCHEMA_VERSION: i64 = 12;
/// Optuna's alembic head for that schema.
pub const OPTUNA_ALEMBIC_HEAD: &str = "v3.2.0.a";
/// What we write to `version_info.library_version` for a database we create.
pub const OPTUNA_LIBRARY_VERSION: &str = "5.0.0";

/// Optuna's tables, as `optuna/storages/_rdb/models.py` creates them in SQLite.
const OPTUNA_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS studies (
	study_id INTEGER NOT NULL,
	study_name VARCHAR(512) NOT NULL,
	PRIMARY KEY (study_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name);
CREATE TABLE IF NOT EXISTS version_info (
	version_info_id INTEGER NOT NULL,
	schema_version INTEGER,
	library_version VARCHAR(256),
	PRIMARY KEY (version_info_id),
	CHECK (version_info_id=1)
);
CREATE TABLE IF NOT EXISTS study_directions (
	study_direction_id INTEGER NOT NULL,
	direction VARCHAR(8) NOT NULL,
	study_id INTEGER NOT NULL,
	objective INTEGER NOT NULL,
	PRIMARY KEY (study_direction_id),
	UNIQUE (study_id, objective),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL,
	study_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (study_user_attribute_id),
	UNIQUE (study_id, "key"),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL,
	study_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (study_system_attribute_id),
	UNIQUE (study_id, "key"),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE IF NOT EXISTS trials (
	trial_id INTEGER NOT NULL,
	number INTEGER,
	study_id INTEGER,
	state VARCHAR(8) NOT NULL,
	datetime_start DATETIME,
	datetime_complete DATETIME,
	PRIMARY KEY (trial_id),
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE INDEX IF NOT EXISTS ix_trials_study_id ON trials (study_id);
CREATE TABLE IF NOT EXISTS trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL,
	trial_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (trial_user_attribute_id),
	UNIQUE (trial_id, "key"),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL,
	trial_id INTEGER,
	"key" VARCHAR(512),
	value_json TEXT,
	PRIMARY KEY (trial_system_attribute_id),
	UNIQUE (trial_id, "key"),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_params (
	param_id INTEGER NOT NULL,
	trial_id INTEGER,
	param_name VARCHAR(512),
	param_value FLOAT,
	distribution_json TEXT,
	PRIMARY KEY (param_id),
	UNIQUE (trial_id, param_name),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_values (
	trial_value_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	objective INTEGER NOT NULL,
	value FLOAT,
	value_type VARCHAR(7) NOT NULL,
	PRIMARY KEY (trial_value_id),
	UNIQUE (trial_id, objective),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	step INTEGER NOT NULL,
	intermediate_value FLOAT,
	intermediate_value_type VARCHAR(7) NOT NULL,
	PRIMARY KEY (trial_intermediate_value_id),
	UNIQUE (trial_id, step),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL,
	trial_id INTEGER NOT NULL,
	heartbeat DATETIME NOT NULL,
	PRIMARY KEY (trial_heartbeat_id),
	UNIQUE (trial_id),
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE IF NOT EXISTS alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
"#;

/// Our migrations, applied in order; entry i brings `user_version` from i to i + 1.
/// APPEND ONLY. Never reorder or edit an entry that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: Optuna's tables (idempotent: a database made by Optuna already has them) and ours.
    r#"
    CREATE TABLE IF NOT EXISTS sft_trial_metrics (
        trial_id INTEGER NOT NULL REFERENCES trials (trial_id),
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (trial_id, step, name)
    );
    CREATE TABLE IF NOT EXISTS sft_workers (
        worker_id INTEGER PRIMARY KEY,
        study_id INTEGER NOT NULL REFERENCES studies (study_id),
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DATETIME NOT NULL,
        last_seen DATETIME NOT NULL,
        slots TEXT NOT NULL,
        state TEXT NOT NULL
    );
    "#,
];

/// The newest `user_version` this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why a database cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaProblem {
    /// Written by a newer sft-search.
    NewerOurs { found: i64 },
    /// Written by an Optuna whose schema we do not know.
    OtherOptuna { found: i64 },
}

/// Reads the versions without writing anything.
pub fn check(conn: &Connection) -> rusqlite::Result<Option<SchemaProblem>> {
    let ours: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if ours > SCHEMA_VERSION {
        return Ok(Some(SchemaProblem::NewerOurs { found: ours }));
    }
    let has_version_table: bool = conn
        .query_row("SELECT 1 FROM sqlite_master WHERE type='table' AND name='version_info'", [], |_| Ok(true))
        .optional()?
        .unwrap_or(false);
    if has_version_table {
        let v: Option<i64> =
            conn.query_row("SELECT schema_version FROM version_info WHERE version_info_id = 1", [], |r| r.get(0)).optional()?.flatten();
        if let Some(v) = v {
            if v != OPTUNA_SCHEMA_VERSION {
                return Ok(Some(SchemaProblem::OtherOptuna { found: v }));
            }
        }
    }
    Ok(None)
}

/// Creates or upgrades the layout in one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    tx.execute_batch(OPTUNA_TABLES)?;
    tx.execute(
        "INSERT OR IGNORE INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?1, ?2)",
        rusqlite::params![OPTUNA_SCHEMA_VERSION, OPTUNA_LIBRARY_VERSION],
    )?;
    let has_alembic: bool = tx.query_row("SELECT COUNT(*) FROM alembic_version", [], |r| r.get::<_, i64>(0))? > 0;
    if !has_alembic {
        tx.execute("INSERT INTO alembic_version (version_num) VALUES (?1)", [OPTUNA_ALEMBIC_HEAD])?;
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}
