"""The SQLite store's schema, as versioned data: ``MIGRATIONS[n]`` takes a file from version n-1 to n.

Applied by :meth:`airtable_cached.store.sqlite.connection.Store.migrate`; the version lives in
``PRAGMA user_version``. Pragmas are data too, applied to every connection in order.
"""

#: Applied to every connection, in order. Data, so they can be read and tested at a glance.
PRAGMAS: tuple[tuple[str, object], ...] = (
    ("busy_timeout", 30_000),  # first: the pragmas below may have to wait for another process
    ("journal_mode", "wal"),
    ("synchronous", "NORMAL"),  # WAL + NORMAL: a committed write survives a process kill
    ("foreign_keys", 1),
    ("cache_size", -16_000),
)

SCHEMA_VERSION = 9

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tables (
        tid          INTEGER PRIMARY KEY AUTOINCREMENT,
        base_id      TEXT NOT NULL,
        table_id     TEXT,            -- tbl... once known
        name         TEXT,            -- the table's name once known
        schema_json  TEXT,            -- Airtable's table schema, when the token could read it
        pulled_at    REAL,            -- epoch seconds of the last complete pull
        generation   INTEGER NOT NULL DEFAULT 0  -- bumped by every pull
    );
    -- Every spelling an agent used for a table (name or id) resolves to one tid.
    CREATE TABLE table_aliases (
        base_id TEXT NOT NULL,
        alias   TEXT NOT NULL,
        tid     INTEGER NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        PRIMARY KEY (base_id, alias)
    );
    -- remote: the record as Airtable last reported it (NULL: not on Airtable yet).
    -- fields: what reads see, remote with the pending writes applied (NULL: deleted locally).
    CREATE TABLE records (
        tid           INTEGER NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        id            TEXT NOT NULL,
        position      INTEGER NOT NULL,
        created_time  TEXT NOT NULL,
        modified_time TEXT,
        remote        TEXT,
        fields        TEXT,
        comment_count INTEGER NOT NULL DEFAULT 0,
        synced_at     REAL,            -- when remote was last set from Airtable
        PRIMARY KEY (tid, id)
    );
    CREATE INDEX records_order ON records (tid, position);
    CREATE TABLE views (
        tid       INTEGER NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        view      TEXT NOT NULL,
        pulled_at REAL NOT NULL,
        PRIMARY KEY (tid, view)
    );
    CREATE TABLE view_members (
        tid       INTEGER NOT NULL,
        view      TEXT NOT NULL,
        record_id TEXT NOT NULL,
        position  INTEGER NOT NULL,
        PRIMARY KEY (tid, view, record_id),
        FOREIGN KEY (tid, view) REFERENCES views(tid, view) ON DELETE CASCADE
    );
    -- The durable write queue. Order is the AUTOINCREMENT seq.
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        tid             INTEGER NOT NULL REFERENCES tables(tid),
        base_id         TEXT NOT NULL,
        table_ref       TEXT NOT NULL,     -- table id or name to use in the URL
        op              TEXT NOT NULL CHECK (op IN ('create', 'update', 'replace', 'delete')),
        record_id       TEXT NOT NULL,
        fields          TEXT,              -- JSON object written by the agent
        base            TEXT,              -- JSON: the values the agent saw before writing
        typecast        INTEGER NOT NULL DEFAULT 0,
        merge_on        TEXT,              -- JSON list: key fields, for creates made by an upsert
        state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'dead')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        claimed_until   REAL,
        last_error      TEXT,
        created_at      REAL NOT NULL
    );
    CREATE INDEX outbox_by_record ON outbox (tid, record_id, seq);
    CREATE INDEX outbox_by_state ON outbox (base_id, state, seq);
    -- Provisional id -> the id Airtable gave the record at flush.
    CREATE TABLE id_map (
        provisional TEXT PRIMARY KEY,
        real        TEXT NOT NULL,
        tid         INTEGER NOT NULL
    );
    -- One row per request sent to Airtable (or answered locally), for status and stats.
    CREATE TABLE sync_log (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at       REAL NOT NULL,
        base_id  TEXT NOT NULL,
        kind     TEXT NOT NULL,      -- pull | push | passthrough | reconcile
        method   TEXT NOT NULL,
        status   INTEGER,            -- HTTP status, NULL for a network error
        records  INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sync_log_at ON sync_log (base_id, at);
    -- Conflicts resolved Airtable-wins: the local value that was dropped.
    CREATE TABLE conflicts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        at          REAL NOT NULL,
        tid         INTEGER NOT NULL,
        record_id   TEXT NOT NULL,
        field       TEXT NOT NULL,
        local_value TEXT,
        remote_value TEXT
    );
    -- Read statistics, kept as counters so they are cheap enough to leave on.
    CREATE TABLE stats (
        tid     INTEGER NOT NULL,
        kind    TEXT NOT NULL,       -- e.g. list.local, list.remote, get.local, formula.fallback
        count   INTEGER NOT NULL DEFAULT 0,
        total_ms REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (tid, kind)
    );
    CREATE TABLE latencies (
        tid  INTEGER NOT NULL,
        kind TEXT NOT NULL,
        ms   REAL NOT NULL
    );
    """,
    # Full-text search over every text value of a record (nested ones too: multiple selects),
    # kept in step with what reads see by triggers, in the same transactions.
    2: """
    CREATE VIRTUAL TABLE records_fts USING fts5(tid UNINDEXED, id UNINDEXED, body, tokenize = 'unicode61 remove_diacritics 2');
    CREATE TRIGGER records_fts_insert AFTER INSERT ON records WHEN NEW.fields IS NOT NULL BEGIN
        INSERT INTO records_fts (tid, id, body)
        SELECT NEW.tid, NEW.id, group_concat(value, ' ') FROM json_tree(NEW.fields) WHERE type = 'text';
    END;
    CREATE TRIGGER records_fts_update AFTER UPDATE OF id, fields ON records BEGIN
        DELETE FROM records_fts WHERE tid = OLD.tid AND id = OLD.id;
        INSERT INTO records_fts (tid, id, body)
        SELECT NEW.tid, NEW.id, group_concat(value, ' ') FROM json_tree(NEW.fields) WHERE type = 'text' AND NEW.fields IS NOT NULL
        HAVING NEW.fields IS NOT NULL;
    END;
    CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
        DELETE FROM records_fts WHERE tid = OLD.tid AND id = OLD.id;
    END;
    INSERT INTO records_fts (tid, id, body)
    SELECT r.tid, r.id, (SELECT group_concat(value, ' ') FROM json_tree(r.fields) WHERE type = 'text')
    FROM records r WHERE r.fields IS NOT NULL;
    """,
    # When the cache first saw a record from Airtable: a record seen before a create was queued
    # cannot be what that create made (used to find a create whose answer was lost).
    3: """
    ALTER TABLE records ADD COLUMN first_seen REAL;
    """,
    # A checksum of what each queued write will send (airtable_cached/store/checksum.py): a write whose
    # bytes changed on disk is dead-lettered instead of sent. NULL for rows written before.
    4: """
    ALTER TABLE outbox ADD COLUMN checksum TEXT;
    """,
    # The full-text index without a table scan per row (issue 11): FTS5 finds a row by its rowid
    # only, so the rowid of each record's index row is kept in records_fts_keys, keyed by
    # (tid, id). A record's own rowid cannot serve: VACUUM may renumber it. A rewrite that leaves
    # a record's text as it was does not touch the index at all.
    5: """
    DROP TRIGGER records_fts_insert;
    DROP TRIGGER records_fts_update;
    DROP TRIGGER records_fts_delete;
    DROP TABLE records_fts;
    CREATE VIRTUAL TABLE records_fts USING fts5(tid UNINDEXED, id UNINDEXED, body, tokenize = 'unicode61 remove_diacritics 2');
    CREATE TABLE records_fts_keys (
        docid INTEGER PRIMARY KEY,   -- the rowid of the record's row in records_fts
        tid   INTEGER NOT NULL,
        id    TEXT NOT NULL,
        UNIQUE (tid, id)
    );
    CREATE TRIGGER records_fts_insert AFTER INSERT ON records WHEN NEW.fields IS NOT NULL BEGIN
        INSERT INTO records_fts (tid, id, body)
        SELECT NEW.tid, NEW.id, group_concat(value, ' ') FROM json_tree(NEW.fields) WHERE type = 'text';
        INSERT INTO records_fts_keys (docid, tid, id) VALUES (last_insert_rowid(), NEW.tid, NEW.id);
    END;
    CREATE TRIGGER records_fts_update AFTER UPDATE OF id, fields ON records
    WHEN OLD.fields IS NOT NEW.fields OR OLD.id IS NOT NEW.id BEGIN
        DELETE FROM records_fts WHERE rowid = (SELECT docid FROM records_fts_keys WHERE tid = OLD.tid AND id = OLD.id);
        DELETE FROM records_fts_keys WHERE tid = OLD.tid AND id = OLD.id;
        INSERT INTO records_fts (tid, id, body)
        SELECT NEW.tid, NEW.id, group_concat(value, ' ') FROM json_tree(NEW.fields) WHERE type = 'text' AND NEW.fields IS NOT NULL
        HAVING NEW.fields IS NOT NULL;
        INSERT INTO records_fts_keys (docid, tid, id) SELECT last_insert_rowid(), NEW.tid, NEW.id WHERE NEW.fields IS NOT NULL;
    END;
    CREATE TRIGGER records_fts_delete AFTER DELETE ON records BEGIN
        DELETE FROM records_fts WHERE rowid = (SELECT docid FROM records_fts_keys WHERE tid = OLD.tid AND id = OLD.id);
        DELETE FROM records_fts_keys WHERE tid = OLD.tid AND id = OLD.id;
    END;
    INSERT INTO records_fts (rowid, tid, id, body)
    SELECT r.rowid, r.tid, r.id, (SELECT group_concat(value, ' ') FROM json_tree(r.fields) WHERE type = 'text')
    FROM records r WHERE r.fields IS NOT NULL;
    INSERT INTO records_fts_keys (docid, tid, id) SELECT rowid, tid, id FROM records WHERE fields IS NOT NULL;
    -- Bases a token was seen to read (a pull or a probe answered), so that a new process reading
    -- a fresh cache asks Airtable nothing. Never the token: an HMAC of it keyed by this file's
    -- own random salt (airtable_cached/engine/access.py, Access.authorize).
    CREATE TABLE token_salt (salt BLOB NOT NULL);
    INSERT INTO token_salt (salt) VALUES (randomblob(32));
    CREATE TABLE token_grants (
        base_id    TEXT NOT NULL,
        digest     TEXT NOT NULL,
        granted_at REAL NOT NULL,
        PRIMARY KEY (base_id, digest)
    );
    """,
    # Incremental refresh (airtable_cached/sync/refresh.py): per table its watermark and what its pulls
    # cost; per base the polled webhook (change feed) and its cursor.
    6: """
    CREATE TABLE refresh_state (
        tid                  INTEGER PRIMARY KEY REFERENCES tables(tid) ON DELETE CASCADE,
        watermark            REAL,     -- Airtable's clock (its Date header) when the last pull began
        last_full            REAL,     -- local clock: last full pull, incremental pull, id sweep
        last_incremental     REAL,
        last_sweep           REAL,
        hook_id              TEXT,     -- the webhook whose payloads cover this table since its last full pull
        source               TEXT,     -- feed | sweep: where its last refresh learnt deletions
        full_pulls           INTEGER NOT NULL DEFAULT 0,
        full_requests        INTEGER NOT NULL DEFAULT 0,
        incremental_pulls    INTEGER NOT NULL DEFAULT 0,
        incremental_requests INTEGER NOT NULL DEFAULT 0,
        stale_served         INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE webhooks (
        base_id    TEXT PRIMARY KEY,
        webhook_id TEXT,
        cursor     INTEGER NOT NULL DEFAULT 1,
        expires_at REAL,                -- Airtable's clock
        created_at REAL,
        read_at    REAL,                -- local clock: last payloads read
        denied_at  REAL,                -- local clock: Airtable refused (403) or the limit was reached
        denied_why TEXT
    );
    """,
    # The agent's call each queued write came from (the seq of the call's first write): Airtable
    # applies a request whole or not at all, so the writes of one call are sent together and
    # dead-lettered together (issue 9).
    7: """
    ALTER TABLE outbox ADD COLUMN call_id INTEGER;
    """,
    # The cache is keyed by the Airtable it mirrors too: two endpoints (a staging proxy and
    # Airtable, two fake servers) with the same base id never share records. '' marks tables
    # cached before this version; the first sync to open the file adopts them for its endpoint.
    8: """
    ALTER TABLE tables ADD COLUMN endpoint TEXT NOT NULL DEFAULT '';
    CREATE TABLE table_aliases_by_endpoint (
        endpoint TEXT NOT NULL DEFAULT '',
        base_id  TEXT NOT NULL,
        alias    TEXT NOT NULL,
        tid      INTEGER NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        PRIMARY KEY (endpoint, base_id, alias)
    );
    INSERT INTO table_aliases_by_endpoint (endpoint, base_id, alias, tid) SELECT '', base_id, alias, tid FROM table_aliases;
    DROP TABLE table_aliases;
    ALTER TABLE table_aliases_by_endpoint RENAME TO table_aliases;
    """,
    # A cache file's webhook is per endpoint too (two endpoints may share a base id). Rows made
    # before are adopted by the first sync to open the file, as its tables are.
    9: """
    CREATE TABLE webhooks_by_endpoint (
        endpoint   TEXT NOT NULL DEFAULT '',
        base_id    TEXT NOT NULL,
        webhook_id TEXT,
        cursor     INTEGER NOT NULL DEFAULT 1,
        expires_at REAL,                -- Airtable's clock
        created_at REAL,
        read_at    REAL,                -- local clock: last payloads read
        denied_at  REAL,                -- local clock: Airtable refused (403) or the limit was reached
        denied_why TEXT,
        PRIMARY KEY (endpoint, base_id)
    );
    INSERT INTO webhooks_by_endpoint (endpoint, base_id, webhook_id, cursor, expires_at, created_at, read_at, denied_at, denied_why)
    SELECT '', base_id, webhook_id, cursor, expires_at, created_at, read_at, denied_at, denied_why FROM webhooks;
    DROP TABLE webhooks;
    ALTER TABLE webhooks_by_endpoint RENAME TO webhooks;
    """,
}
