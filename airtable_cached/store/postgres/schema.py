"""The PostgreSQL store's schema, as versioned data: ``MIGRATIONS[n]`` takes a database from n-1 to n.

Applied by :meth:`airtable_cached.store.postgres.connection.PostgresStore.migrate`, each version in
its own transaction under an advisory lock (hosts starting at once migrate once); the version lives
in the ``schema_version`` table. Version 1 holds the same logical tables as the SQLite store at its
latest version (``airtable_cached/store/sqlite/schema.py``), with these differences:

* a record keeps its exact JSON text (``fields_json``/``remote_json``: key order is Airtable's field
  order, which agents see) beside a ``jsonb`` copy that SQL filters and indexes on (``fields``).
  ``jsonb`` cannot hold U+0000 nor a lone surrogate: for such a record ``fields`` is NULL while
  ``fields_json`` is not, and the formula compiler leaves that row to the Python evaluator
  (``airtable_cached/formula/sql.py``, the PostgreSQL dialect). See :func:`as_jsonb`.
* the queue's JSON columns stay ``text``: their checksum is over the stored bytes
  (``airtable_cached/store/checksum.py``);
* full-text search is a ``tsvector`` column kept by a trigger, accent- and case-folded (``unaccent``
  and the ``simple`` configuration), as SQLite's ``unicode61 remove_diacritics 2`` tokenizer does;
* the rate budget and the flush leases of every host live here too (``pacer.py``, ``locks.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

SCHEMA_VERSION = 2

#: Taken (as a transaction-level advisory lock) while migrating: hosts starting at once migrate once.
MIGRATION_LOCK = (0x61746301, 0)

#: What jsonb refuses: U+0000 and (escaped) surrogates. A backslash escaped before "u" makes a
#: false alarm at worst, which only sends that row to the evaluator.
_NOT_JSONB = re.compile(r"\\u0000|\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def as_jsonb(fields_json: str | None) -> str | None:
    """The text to store in a record's ``jsonb`` column for its exact JSON text (None: leave it NULL,
    the row is then answered by the Python evaluator only)."""
    if fields_json is None or _NOT_JSONB.search(fields_json):
        return None
    return fields_json


def dumps_exact(value: Any) -> str:
    """A record's fields as its exact JSON text (the same form as the SQLite store keeps), a lone
    surrogate escaped (PostgreSQL's text is UTF-8 and cannot hold it raw)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE tables (
        tid          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        endpoint     text NOT NULL DEFAULT '',
        base_id      text NOT NULL,
        table_id     text,
        name         text,
        schema_json  text,
        pulled_at    double precision,
        generation   bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE table_aliases (
        endpoint text NOT NULL DEFAULT '',
        base_id  text NOT NULL,
        alias    text NOT NULL,
        tid      bigint NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        PRIMARY KEY (endpoint, base_id, alias)
    );
    CREATE TABLE records (
        tid           bigint NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        id            text NOT NULL,
        position      bigint NOT NULL,
        created_time  text NOT NULL,
        modified_time text,
        remote_json   text,
        fields_json   text,
        fields        jsonb,
        body          tsvector,
        comment_count bigint NOT NULL DEFAULT 0,
        synced_at     double precision,
        first_seen    double precision,
        PRIMARY KEY (tid, id)
    );
    CREATE INDEX records_order ON records (tid, position);
    CREATE INDEX records_fields ON records USING gin (fields jsonb_path_ops);
    CREATE INDEX records_body ON records USING gin (body);
    CREATE TABLE views (
        tid       bigint NOT NULL REFERENCES tables(tid) ON DELETE CASCADE,
        view      text NOT NULL,
        pulled_at double precision NOT NULL,
        PRIMARY KEY (tid, view)
    );
    CREATE TABLE view_members (
        tid       bigint NOT NULL,
        view      text NOT NULL,
        record_id text NOT NULL,
        position  bigint NOT NULL,
        PRIMARY KEY (tid, view, record_id),
        FOREIGN KEY (tid, view) REFERENCES views(tid, view) ON DELETE CASCADE
    );
    CREATE TABLE outbox (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tid             bigint NOT NULL REFERENCES tables(tid),
        base_id         text NOT NULL,
        table_ref       text NOT NULL,
        op              text NOT NULL CHECK (op IN ('create', 'update', 'replace', 'delete')),
        record_id       text NOT NULL,
        fields          text,
        base            text,
        typecast        integer NOT NULL DEFAULT 0,
        merge_on        text,
        state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'inflight', 'dead')),
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL DEFAULT 0,
        claimed_until   double precision,
        last_error      text,
        created_at      double precision NOT NULL,
        checksum        text,
        call_id         bigint
    );
    CREATE INDEX outbox_by_record ON outbox (tid, record_id, seq);
    CREATE INDEX outbox_by_state ON outbox (base_id, state, seq);
    CREATE TABLE id_map (
        provisional text PRIMARY KEY,
        real        text NOT NULL,
        tid         bigint NOT NULL
    );
    CREATE TABLE sync_log (
        id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at       double precision NOT NULL,
        base_id  text NOT NULL,
        kind     text NOT NULL,
        method   text NOT NULL,
        status   integer,
        records  integer NOT NULL DEFAULT 0
    );
    CREATE INDEX sync_log_at ON sync_log (base_id, at);
    CREATE TABLE conflicts (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at           double precision NOT NULL,
        tid          bigint NOT NULL,
        record_id    text NOT NULL,
        field        text NOT NULL,
        local_value  text,
        remote_value text
    );
    CREATE TABLE stats (
        tid      bigint NOT NULL,
        kind     text NOT NULL,
        count    bigint NOT NULL DEFAULT 0,
        total_ms double precision NOT NULL DEFAULT 0,
        PRIMARY KEY (tid, kind)
    );
    CREATE TABLE latencies (
        tid  bigint NOT NULL,
        kind text NOT NULL,
        ms   double precision NOT NULL
    );
    CREATE TABLE token_salt (salt bytea NOT NULL);
    INSERT INTO token_salt (salt) VALUES (decode(md5(random()::text || clock_timestamp()::text)
                                          || md5(random()::text || clock_timestamp()::text), 'hex'));
    CREATE TABLE token_grants (
        base_id    text NOT NULL,
        digest     text NOT NULL,
        granted_at double precision NOT NULL,
        PRIMARY KEY (base_id, digest)
    );
    CREATE TABLE refresh_state (
        tid                  bigint PRIMARY KEY REFERENCES tables(tid) ON DELETE CASCADE,
        watermark            double precision,
        last_full            double precision,
        last_incremental     double precision,
        last_sweep           double precision,
        hook_id              text,
        source               text,
        full_pulls           bigint NOT NULL DEFAULT 0,
        full_requests        bigint NOT NULL DEFAULT 0,
        incremental_pulls    bigint NOT NULL DEFAULT 0,
        incremental_requests bigint NOT NULL DEFAULT 0,
        stale_served         bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE webhooks (
        endpoint   text NOT NULL DEFAULT '',
        base_id    text NOT NULL,
        webhook_id text,
        cursor     bigint NOT NULL DEFAULT 1,
        expires_at double precision,
        created_at double precision,
        read_at    double precision,
        denied_at  double precision,
        denied_why text,
        PRIMARY KEY (endpoint, base_id)
    );
    -- One rate budget per base for every host (store/postgres/pacer.py): the next free turn and
    -- the end of a 429's lock-out, on the database's clock.
    CREATE TABLE rate_budget (
        base_id       text PRIMARY KEY,
        next_at       double precision NOT NULL DEFAULT 0,
        penalty_until double precision NOT NULL DEFAULT 0
    );
    -- The lease of each base's flush lock (store/postgres/locks.py); the lock itself is a
    -- session-level advisory lock, released by the server when its holder's connection ends.
    CREATE TABLE flush_leases (
        lock_key    text PRIMARY KEY,
        epoch       bigint NOT NULL DEFAULT 0,
        lease_until double precision,
        holder_pid  integer
    );
    """,
    # Full-text search: every text value of a record (nested ones too), accent- and case-folded.
    # unaccent is a trusted extension (PostgreSQL 13+): a database owner may create it. Its function
    # is not IMMUTABLE, hence a trigger rather than a generated column.
    2: """
    CREATE EXTENSION IF NOT EXISTS unaccent;
    CREATE FUNCTION atc_search_text(doc jsonb) RETURNS text LANGUAGE sql STABLE AS $$
        SELECT coalesce(string_agg(v #>> '{}', ' '), '')
        FROM jsonb_path_query(doc, 'strict $.**') AS v WHERE jsonb_typeof(v) = 'string'
    $$;
    CREATE FUNCTION atc_records_body() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.fields IS NULL THEN
            NEW.body := NULL;
        ELSIF TG_OP = 'INSERT' OR NEW.fields IS DISTINCT FROM OLD.fields THEN
            NEW.body := to_tsvector('simple', unaccent(atc_search_text(NEW.fields)));
        END IF;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER records_body BEFORE INSERT OR UPDATE OF fields ON records
        FOR EACH ROW EXECUTE FUNCTION atc_records_body();
    """,
}
