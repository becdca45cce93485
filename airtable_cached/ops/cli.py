"""``airtable-cached``: see and repair the cache without opening SQLite by hand.

Every command renders what an operator command (:mod:`airtable_cached.ops.maintenance`) returns; ``--json`` prints
that data as JSON instead. The Airtable token comes from ``--token`` or ``AIRTABLE_API_KEY``; it is
never stored and never printed. ``--path`` overrides ``AIRTABLE_CACHED_PATH``.

Exit codes: 0 success, 1 failure (or, for ``check``, warnings), 2 usage error (or, for ``check``,
damage: corruption, a wrong schema version, a world-readable file, an orphaned write).
"""

from __future__ import annotations

import functools
import importlib
import json
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from airtable_cached.config import Settings
from airtable_cached.ops import maintenance, safety

# -- shared options and rendering --------------------------------------------------------------------

def _path_option(f: Callable) -> Callable:
    """``--path`` (a SQLite file) and ``--url`` (a PostgreSQL database): the cache a command works on."""
    f = click.option("--url", default=None, expose_value=False, callback=_remember_url, metavar="URL",
                     help="A postgresql:// cache shared by many hosts (default: $AIRTABLE_CACHED_URL).")(f)
    return click.option("--path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="Database file (default: $AIRTABLE_CACHED_PATH, else ~/.cache/airtable_cached/cache.sqlite3).")(f)


def _remember_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["airtable_cached.url"] = value


def _json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(f)


def _token_option(f: Callable) -> Callable:
    return click.option("--token", envvar="AIRTABLE_API_KEY", default=None, show_default=False, show_envvar=False,
                        help="Airtable token (default: $AIRTABLE_API_KEY). Never stored, never printed.")(f)


def _fail_cleanly(f: Callable) -> Callable:
    """Errors become one line on stderr and exit status 1 (the token never appears in them)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - rendered, not a traceback: operators read this in cron mail
            token = kwargs.get("token")
            message = f"{type(exc).__name__}: {exc}"
            if token:
                message = message.replace(token, "***")
            raise click.ClickException(message) from None

    return wrapper


def _settings(path: Path | None) -> Settings:
    """The settings, with ``--url`` (else ``--path``: SQLite there) over the environment's."""
    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get("airtable_cached.url") if ctx is not None else None
    settings = Settings.from_env(path=path, url=url)
    if path is not None and url is None:
        settings = settings.replace(url=None)  # --path names a SQLite file, whatever the environment says
    return settings


def _open(path: Path | None, *, must_exist: bool = True):
    from airtable_cached.runtime import open_store

    settings = _settings(path)
    if must_exist and settings.url is None and not settings.path.exists():
        raise _no_database(settings.path)
    return settings, open_store(settings.store_location)


def _refuse_on_postgres(settings: Settings, command: str, tool: str) -> None:
    """``backup``, ``restore`` and ``salvage`` copy SQLite files: on PostgreSQL they refuse (exit 1)."""
    if settings.url is not None:
        from airtable_cached.store.postgres import redact

        raise click.ClickException(
            f"{command} works on a SQLite file; {redact(settings.url)} is a PostgreSQL database: use {tool} "
            f"(e.g. `pg_dump --format=custom --file=cache.dump DBNAME`, restored with `pg_restore --clean "
            f"--dbname=DBNAME cache.dump`)")


def _no_database(path: Path) -> click.ClickException:
    """One wording and one exit status (1) for every command that needs the file."""
    return click.ClickException(f"no database at {path} (pull a table first, or pass --path)")


def _need_token(token: str | None) -> str:
    if not token:
        raise click.UsageError("this command talks to Airtable: pass --token or set AIRTABLE_API_KEY")
    return token


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


class _Quiet:
    def update(self, n: int, *_: Any) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def _progress(as_json: bool, length: int, label: str):
    """A progress bar on a terminal only: quiet under --json, in logs and in pipes."""
    if as_json or not sys.stderr.isatty():
        return _Quiet()
    return click.progressbar(length=max(1, length), label=label, file=sys.stderr)


# -- the group ---------------------------------------------------------------------------------------

class _Group(click.Group):
    """Commands whose modules are costly to import (``run``) are imported only when listed or asked
    for; an import that fails raises, so a broken command is never silently missing."""

    lazy = {"run": ("airtable_cached.run", "run_command")}

    def _load(self, name: str) -> click.Command:
        module_name, attr = self.lazy[name]
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names |= set(self.lazy)
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in self.lazy:
            command = self._load(name)
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="airtable_cached")
def main() -> None:
    """Operate an airtable_cached cache: status, sync, the write queue, backups, health.

    \b
    Examples:
      airtable-cached status
      AIRTABLE_API_KEY=pat... airtable-cached pull appXXXXXXXXXXXXXX Leads
      airtable-cached check --quick && airtable-cached backup --keep 7
    """


# -- status ------------------------------------------------------------------------------------------

@main.command()
@_path_option
@_json_option
@_fail_cleanly
def status(path: Path | None, as_json: bool) -> None:
    """Per table: records, last pull, age, queued and dead writes; per base: requests in the last hour.

    \b
    Example:
      airtable-cached status --json
    """
    settings, store = _open(path)
    data = maintenance.status(store, settings)
    if as_json:
        return _emit_json(data)
    click.echo(f"{data['path']}  schema v{data['schema_version']}  {data['bytes']:,} bytes  mode {data['mode']}")
    rows = [[t["base_id"], t["table"], t["records"], _when(t["last_pull"]),
             f"{_ago(t['age'])}/{_ago(t['max_age'])}" + ("" if t["fresh"] else " stale"),
             t["pending"], t["dead"], _ago(t["oldest_pending_age"])] for t in data["tables"]]
    if rows:
        click.echo(_table(rows, ["base", "table", "records", "last pull", "age/max", "pending", "dead", "oldest"]))
    else:
        click.echo("no tables cached yet")
    refresh_rows = [[t["base_id"], t["table"], _when(t.get("last_incremental")), _when(t.get("last_full")),
                     t.get("watermark") or "-", f"{t.get('deletions') or '-'} ({_ago(t.get('deletions_age'))} ago)",
                     t.get("full_pull_reason") or "-"] for t in data["tables"]]
    if refresh_rows:
        click.echo(_table(refresh_rows, ["base", "table", "last incremental", "last full", "watermark",
                                         "deletions from", "full pulls"]))
    for base_id, b in data["bases"].items():
        click.echo(f"base {base_id}: {b['requests_last_hour']} requests in the last hour"
                   f" ({b['rate_limited_last_hour']} met 429)")


# -- pull and flush ----------------------------------------------------------------------------------

@main.command()
@click.argument("base", required=False)
@click.argument("table", required=False)
@click.option("--force", is_flag=True, help="Pull even tables that are still fresh.")
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def pull(base: str | None, table: str | None, force: bool, token: str | None, path: Path | None, as_json: bool) -> None:
    """Pull tables from Airtable into the cache (all cached ones, one base's, or one table).

    \b
    Examples:
      airtable-cached pull                           # every cached table that is stale
      airtable-cached pull appXXXXXXXXXXXXXX --force # every table of a base
      airtable-cached pull appXXXXXXXXXXXXXX Leads
    """
    token = _need_token(token)
    settings, store = _open(path, must_exist=False)
    estimate = store.replica.record_count()
    with _progress(as_json, estimate, "pulling") as bar:
        results = maintenance.pull(store, settings, token, base, table, force=force,
                                   on_page=lambda _t, n: bar.update(n))
    if as_json:
        return _emit_json(results)
    for r in results:
        what = "fresh, skipped (use --force)"
        if r["pulled"]:
            what = f"{r['records']} records" if r.get("kind") == "full" else f"{r['records']} changed ({r.get('kind')})"
        click.echo(f"{r['base_id']}/{r['table']}: {what}")
    if not results:
        click.echo("nothing to pull: name a BASE (and TABLE)")


@main.command()
@click.option("--base", default=None, help="Only this base's writes.")
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def flush(base: str | None, token: str | None, path: Path | None, as_json: bool) -> None:
    """Send the queued writes to Airtable now. Exits 1 if any write failed.

    \b
    Example:
      airtable-cached flush --base appXXXXXXXXXXXXXX
    """
    token = _need_token(token)
    settings, store = _open(path)
    result = maintenance.flush(store, settings, token, base)
    if as_json:
        _emit_json(result.as_dict())
    else:
        click.echo(f"sent {len(result.sent)} write(s) in {result.requests} request(s); "
                   f"{len(result.failed)} failed; {result.pending} still queued")
        for f in result.failed:
            kind = "dead-lettered" if f.get("dead") else "will retry"
            click.echo(f"  {f['op']} {f['record_id']}: {f['status']} {json.dumps(f['error'])} ({kind})", err=True)
        for busy in result.busy:
            click.echo(f"  base {busy}: another process is flushing it; its writes are left to that flusher")
    if result.failed:
        sys.exit(1)


# -- the queue ---------------------------------------------------------------------------------------

@main.group()
def queue() -> None:
    """Inspect and manage pending and dead-lettered writes.

    \b
    Examples:
      airtable-cached queue list --state dead
      airtable-cached queue retry --all
      airtable-cached queue drop 42 --yes
    """


@queue.command("list")
@click.option("--state", type=click.Choice(["pending", "inflight", "dead"]), default=None, help="Only this state.")
@click.option("--base", default=None, help="Only this base.")
@_path_option
@_json_option
@_fail_cleanly
def queue_list(state: str | None, base: str | None, path: Path | None, as_json: bool) -> None:
    """List queued writes, oldest first, with attempts and Airtable's last answer.

    \b
    Example:
      airtable-cached queue list --state dead --json
    """
    _settings_, store = _open(path)
    items = maintenance.queue_list(store, base=base, state=state)
    if as_json:
        return _emit_json(items)
    if not items:
        click.echo("the queue is empty")
        return
    rows = []
    for i in items:
        error = i["last_error"]
        why = "" if not error else f"{error.get('status')} {json.dumps(error.get('body'))[:80]}"
        rows.append([i["seq"], i["state"], i["op"], f"{i['base_id']}/{i['table']}", i["record_id"], i["attempts"], why])
    click.echo(_table(rows, ["id", "state", "op", "table", "record", "tries", "last error"]))


def _ids(ids: tuple[int, ...], all_: bool) -> list[int] | None:
    if all_ and ids:
        raise click.UsageError("give write ids or --all, not both")
    if not all_ and not ids:
        raise click.UsageError("give one or more write ids (see `queue list`) or --all")
    return None if all_ else list(ids)


@queue.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every dead-lettered write.")
@click.option("--flush/--no-flush", "do_flush", default=True,
              help="Send them right away when a token is available (default) or leave them queued.")
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def queue_retry(ids: tuple[int, ...], all_: bool, do_flush: bool, token: str | None, path: Path | None, as_json: bool) -> None:
    """Put dead-lettered writes back in the queue (after fixing their cause) and send them.

    Exits 1 if a retried write fails again.

    \b
    Examples:
      airtable-cached queue retry 17 18
      airtable-cached queue retry --all --no-flush
    """
    settings, store = _open(path)
    done = maintenance.queue_retry(store, _ids(ids, all_))
    data: dict[str, Any] = dict(done)
    failed = []
    if do_flush and token and (done["requeued"] or done["due_now"]):
        bases = {i["base_id"] for i in maintenance.queue_list(store)
                 if i["seq"] in set(done["requeued"]) | set(done["due_now"])}
        results = [maintenance.flush(store, settings, token, b) for b in sorted(bases)]
        retried = set(done["requeued"]) | set(done["due_now"])
        failed = [f for r in results for f in r.failed if set(f["seqs"]) & retried]
        data["flush"] = [r.as_dict() for r in results]
    if as_json:
        _emit_json(data)
    else:
        click.echo(f"requeued {len(done['requeued'])} dead-lettered write(s); {len(done['due_now'])} made due now")
        if "flush" in data:
            sent = sum(len(r["sent"]) for r in data["flush"])
            click.echo(f"sent {sent} write(s); {len(failed)} retried write(s) failed again")
        elif do_flush and not token:
            click.echo("no token: run `airtable-cached flush` (or let the sync process send them)")
        for f in failed:
            click.echo(f"  {f['op']} {f['record_id']}: {f['status']} {json.dumps(f['error'])}", err=True)
    if failed:
        sys.exit(1)


@queue.command("drop")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every dead-lettered write.")
@click.option("--include-pending", is_flag=True, help="With --all: every write, not only dead-lettered ones.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_path_option
@_json_option
@_fail_cleanly
def queue_drop(ids: tuple[int, ...], all_: bool, include_pending: bool, yes: bool, path: Path | None, as_json: bool) -> None:
    """Remove writes from the queue for good; reads stop seeing them at once.

    Dropping a create drops the later writes to that record too. Asks first unless --yes.

    \b
    Examples:
      airtable-cached queue drop 42
      airtable-cached queue drop --all --yes
    """
    _s, store = _open(path)
    wanted = _ids(ids, all_)
    if not yes:
        what = f"write(s) {', '.join(map(str, wanted))}" if wanted else (
            "EVERY queued write" if include_pending else "every dead-lettered write")
        click.confirm(f"Drop {what}? They will never reach Airtable", abort=True, err=True)
    done = maintenance.queue_drop(store, wanted, include_pending=include_pending)
    if as_json:
        return _emit_json(done)
    click.echo(f"dropped {len(done['dropped'])} write(s): {', '.join(map(str, done['dropped'])) or '-'}")


# -- backup and restore ------------------------------------------------------------------------------

@main.command()
@click.option("--to", type=click.Path(path_type=Path), default=None,
              help="Folder for the backup (named by UTC time), or a file path ending in .sqlite3. "
                   "Default: backups/ beside the database.")
@click.option("--keep", type=click.IntRange(min=1), default=None, envvar="AIRTABLE_CACHED_BACKUP_KEEP",
              help="Keep only the newest N backups in the folder.")
@click.option("--force", is_flag=True, help="Overwrite an existing file named by --to (never the live database).")
@_path_option
@_json_option
@_fail_cleanly
def backup(to: Path | None, keep: int | None, force: bool, path: Path | None, as_json: bool) -> None:
    """Take a consistent copy of the database while agents keep running (SQLite backup API).

    Refuses to write over the live database, and over an existing file unless --force.

    \b
    Example:
      airtable-cached backup --to /backups --keep 7
      airtable-cached backup --to /backups/before-upgrade.sqlite3 --force
    """
    _refuse_on_postgres(_settings(path), "backup", "pg_dump")
    settings, store = _open(path)
    made = maintenance.backup(store, to, keep, force=force)
    data = {"backup": str(made), "bytes": made.stat().st_size}
    if as_json:
        return _emit_json(data)
    click.echo(f"backup written: {made} ({data['bytes']:,} bytes)")


@main.command()
@click.argument("backup_path", metavar="PATH", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask when queued writes would be lost.")
@_path_option
@_json_option
@_fail_cleanly
def restore(backup_path: Path, yes: bool, path: Path | None, as_json: bool) -> None:
    """Swap a backup in as the database, keeping the replaced file aside.

    Refuses while a flush holds the database or when the backup fails `check`. Stop the agents
    first: writes they queue after the backup was taken are not in it.

    \b
    Example:
      airtable-cached restore ~/.cache/airtable_cached/backups/cache-20250101T030000.000000Z.sqlite3
    """
    settings = _settings(path)
    _refuse_on_postgres(settings, "restore", "pg_restore")
    try:
        safety.require_cache_database(backup_path)
    except safety.SafetyError as exc:
        raise click.ClickException(f"restore refused: {exc}") from None
    if settings.path.exists() and not yes:
        from airtable_cached.ops.backup import queued_seqs  # the same count restore reports

        live, _ = queued_seqs(settings.path)
        kept, _ = queued_seqs(backup_path)
        lost = sorted(live - kept)
        if lost:
            click.confirm(f"{len(lost)} queued write(s) are not in this backup and would be dropped "
                          f"(the replaced file is kept aside). Restore anyway?", abort=True, err=True)
    try:
        result = maintenance.restore(backup_path, settings)
    except maintenance.RestoreRefused as exc:
        raise click.ClickException(f"restore refused: {exc}") from None
    if as_json:
        return _emit_json(result.as_dict())
    click.echo(f"restored {result.restored_from} into {result.database}")
    if result.replaced_kept_at:
        click.echo(f"the replaced database is kept at {result.replaced_kept_at}")
    if result.writes_resent:
        click.echo(f"note: {len(result.writes_resent)} write(s) in the backup were probably sent already and "
                   f"will be sent again (see `queue list`)", err=True)
    click.echo(f"{result.pending} write(s) queued")


@main.command()
@click.option("--from", "source", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The damaged database (default: the configured one).")
@click.option("--to", "dest", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A new file to copy the queue into (must not exist).")
@_path_option
@_json_option
@_fail_cleanly
def salvage(source: Path | None, dest: Path, path: Path | None, as_json: bool) -> None:
    """Copy every readable queued write out of a damaged database into a fresh one.

    Reads row by row where a whole-table read fails; writes that are unreadable or no longer match
    their checksum are listed, not copied. Cached records are not copied (the next read pulls them);
    the agents' own unflushed creates are rebuilt from the queue. Then stop the agents and
    `restore` the new file (or point AIRTABLE_CACHED_PATH at it). Exit status 1 when some writes
    could not be copied (the new file is still made).

    \b
    Example:
      airtable-cached salvage --to /tmp/salvaged.sqlite3 && airtable-cached restore /tmp/salvaged.sqlite3 --yes
    """
    settings = _settings(path)
    if source is None:
        _refuse_on_postgres(settings, "salvage", "pg_dump and pg_restore")
    damaged = source or settings.path
    result = safety.salvage(damaged, dest)
    if as_json:
        _emit_json(result.as_dict())
    else:
        click.echo(f"salvaged {len(result.copied)} queued write(s) from {result.source} into {result.database}")
        for skipped in result.skipped:
            click.echo(f"  not copied: seq {skipped['seq']}: {skipped['reason']}", err=True)
    if result.skipped:
        raise click.exceptions.Exit(1)  # the new file is usable; some writes could not be copied


# -- check, stats ------------------------------------------------------------------------------------

def _check_findings(settings: Settings, fix: bool, quick: bool) -> tuple[list, str]:
    """``check``'s findings and where it looked: a SQLite file, or a PostgreSQL database."""
    if settings.url is not None:
        from airtable_cached.ops.check_server import check_server
        from airtable_cached.runtime import open_store

        store: Any = open_store(settings.url)
        return check_server(store, fix=fix, quick=quick), store.location
    if not settings.path.exists():
        raise _no_database(settings.path)
    try:
        return maintenance.check(settings.path, fix=fix, thorough=not quick), str(settings.path)
    except sqlite3.Error as exc:
        return [maintenance.Finding("error", "unreadable", f"{settings.path}: {exc}")], str(settings.path)


@main.command()
@click.option("--fix", is_flag=True, help="Repair what is safe (permissions, orphaned writes, stale claims, old schema).")
@click.option("--quick", is_flag=True, help="PRAGMA quick_check instead of the full integrity_check "
              "(on PostgreSQL, where the server checks its own pages, the same checks run).")
@click.option("--fail-on", type=click.Choice(["warning", "error"]), default="warning", show_default=True,
              help="Lowest severity that makes the exit status non-zero.")
@_path_option
@_json_option
def check(fix: bool, quick: bool, fail_on: str, path: Path | None, as_json: bool) -> None:
    """Check integrity, schema version, queue consistency and file permissions.

    Exit status: 0 healthy, 1 warnings, 2 errors (damage, wrong schema, world-readable file),
    so cron jobs and container health checks can use it.

    \b
    Examples:
      airtable-cached check
      airtable-cached check --quick --fail-on error   # a container health check
      airtable-cached check --fix
    """
    try:
        settings = _settings(path)
    except Exception as exc:  # noqa: BLE001 - logged or re-raised
        raise click.ClickException(str(exc)) from None
    findings, where = _check_findings(settings, fix, quick)
    code = maintenance.exit_code(findings, fail_on=fail_on)
    if as_json:
        _emit_json({"path": where, "ok": code == 0, "exit_code": code,
                    "findings": [f.as_dict() for f in findings]})
    else:
        if not findings:
            click.echo(f"ok: {where}")
        for f in findings:
            mark = " (fixed)" if f.fixed else ""
            click.echo(f"{f.severity}: {f.message}{mark}", err=f.severity != "info" and not f.fixed)
    sys.exit(code)


@main.command()
@_path_option
@_json_option
@_fail_cleanly
def stats(path: Path | None, as_json: bool) -> None:
    """Cache hits and misses, local vs remote reads, formula fallbacks, latencies, requests, 429s, bytes.

    \b
    Example:
      airtable-cached stats --json
    """
    _s, store = _open(path)
    data = maintenance.stats(store)
    if as_json:
        return _emit_json(data)
    r = data["reads"]
    ratio = "-" if r["hit_ratio"] is None else f"{r['hit_ratio']:.1%}"
    click.echo(f"reads: {r['local']} local, {r['remote']} sent to Airtable, {r['misses']} misses "
               f"(hit ratio {ratio}); {r['formula_fallbacks']} formula fallbacks")
    rows = []
    for t in data["tables"]:
        for kind, k in sorted(t["kinds"].items()):
            rows.append([f"{t['base_id']}/{t['table']}", kind, k["count"], k["p50_ms"], k["p95_ms"]])
    if rows:
        click.echo(_table(rows, ["table", "kind", "count", "p50 ms", "p95 ms"]))
    refreshes = [[f"{t['base_id']}/{t['table']}", t["incremental_pulls"], t["incremental_requests"], t["full_pulls"],
                  t["full_requests"], t["stale_served"]] for t in data.get("refresh", [])]
    if refreshes:
        click.echo(_table(refreshes, ["table", "incremental", "their requests", "full", "their requests",
                                      "stale served"]))
    q = data["requests"]
    click.echo(f"requests sent: {q['sent']} ({q['rate_limited']} met 429)")
    b = data["bytes"]
    click.echo(f"bytes: {b['file']:,} on disk, {b['records_json']:,} of record JSON, {b['free']:,} free")


# -- reset, reseed, vacuum ---------------------------------------------------------------------------

@main.command()
@click.option("--table", default=None, help="BASE/TABLE or a table name (default: every table).")
@click.option("--include-queue", is_flag=True, help="Drop the queued writes too (asks first unless --yes).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_path_option
@_json_option
@_fail_cleanly
def reset(table: str | None, include_queue: bool, yes: bool, path: Path | None, as_json: bool) -> None:
    """Drop cached records so the next read pulls again; the write queue is kept.

    \b
    Examples:
      airtable-cached reset --table appXXXXXXXXXXXXXX/Leads
      airtable-cached reset --include-queue --yes
    """
    _s, store = _open(path)
    if include_queue and not yes:
        click.confirm("Drop the queued writes too? They will never reach Airtable", abort=True, err=True)
    data = maintenance.reset(store, table, include_queue=include_queue)
    if as_json:
        return _emit_json(data)
    click.echo(f"reset {data['tables']} table(s): {data['records']} record(s) and {data['writes']} write(s) dropped")


@main.command()
@click.option("--table", default=None, help="BASE/TABLE or a table name (default: every table).")
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def reseed(table: str | None, token: str | None, path: Path | None, as_json: bool) -> None:
    """Reset the cache (keeping the queue), then pull again.

    \b
    Example:
      AIRTABLE_API_KEY=pat... airtable-cached reseed --table Leads
    """
    token = _need_token(token)
    settings, store = _open(path)
    estimate = store.replica.record_count()
    with _progress(as_json, estimate, "pulling") as bar:
        data = maintenance.reseed(store, settings, token, table, on_page=lambda _t, n: bar.update(n))
    if as_json:
        return _emit_json(data)
    click.echo(f"dropped {data['reset']['records']} cached record(s)")
    for r in data["pulled"]:
        click.echo(f"{r['base_id']}/{r['table']}: {r['records']} records")


@main.command()
@click.option("--keep-log-days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              envvar="AIRTABLE_CACHED_LOG_DAYS", help="Prune sync-log entries older than this ($AIRTABLE_CACHED_LOG_DAYS).")
@_path_option
@_json_option
@_fail_cleanly
def vacuum(keep_log_days: float, path: Path | None, as_json: bool) -> None:
    """Prune the sync log and compact the database file.

    \b
    Example:
      airtable-cached vacuum --keep-log-days 7
    """
    _s, store = _open(path)
    data = maintenance.vacuum(store, keep_log_days)
    if as_json:
        return _emit_json(data)
    click.echo(f"pruned {data['sync_log_pruned']} log entries; {data['bytes_before']:,} -> {data['bytes_after']:,} bytes")


# -- the sync process, the demo ----------------------------------------------------------------------

@main.command("serve-sync")
@click.option("--table", "tables", multiple=True, metavar="BASE/TABLE",
              help="Tables to keep pulled (repeatable; default: the tables already in the cache).")
@click.option("--pull-every", type=click.FloatRange(min=0), default=None, envvar="AIRTABLE_CACHED_PULL_EVERY",
              help="Seconds between refreshes of a table (default: half AIRTABLE_CACHED_MAX_AGE).")
@click.option("--flush-every", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              envvar="AIRTABLE_CACHED_FLUSH_EVERY", help="Seconds between looks at the queue.")
@click.option("--backup-every", type=click.FloatRange(min=0), default=86400.0, show_default=True,
              envvar="AIRTABLE_CACHED_BACKUP_EVERY", help="Seconds between backups (0: none).")
@click.option("--backup-keep", type=click.IntRange(min=1), default=7, show_default=True,
              envvar="AIRTABLE_CACHED_BACKUP_KEEP", help="Backups kept.")
@click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="AIRTABLE_CACHED_BACKUP_DIR", help="Backup folder (default: backups/ beside the database).")
@click.option("--keep-log-days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              envvar="AIRTABLE_CACHED_LOG_DAYS", help="Prune sync-log entries older than this, daily.")
@click.option("--stop-grace", type=click.FloatRange(min=0), default=5.0, show_default=True,
              envvar="AIRTABLE_CACHED_STOP_GRACE",
              help="Seconds a flush may go on after SIGTERM before its request is abandoned (the writes stay queued).")
@click.option("--max-cycles", type=int, default=None, hidden=True)
@click.option("--log-level", default="INFO", show_default=True, envvar="AIRTABLE_CACHED_LOG_LEVEL")
@_token_option
@_path_option
@_fail_cleanly
def serve_sync(tables, pull_every, flush_every, backup_every, backup_keep, backup_dir, keep_log_days,
               stop_grace, max_cycles, log_level, token, path) -> None:
    """Run the sync process: pull on schedule, flush continuously, back up daily.

    Stops cleanly on SIGTERM/SIGINT with the queue intact.

    \b
    Example:
      AIRTABLE_API_KEY=pat... airtable-cached serve-sync --table appXXXXXXXXXXXXXX/Leads
    """
    import logging

    from airtable_cached.ops.serve import serve

    token = _need_token(token)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(path)
    result = serve(settings, token, tables=tables, pull_every=pull_every, flush_every=flush_every,
                   backup_every=backup_every or None, backup_keep=backup_keep, backup_dir=backup_dir,
                   keep_log_days=keep_log_days or None, stop_grace=stop_grace, max_cycles=max_cycles)
    click.echo(f"serve-sync stopped: {result.sent} sent, {result.failed} failed, {result.pulls} pulls", err=True)


# -- webhooks (the change feed) ------------------------------------------------------------------------

@main.group()
def webhooks() -> None:
    """See and clean up the webhooks the change feed uses (one per base per cache file).

    \b
    Examples:
      airtable-cached webhooks list
      airtable-cached webhooks remove appXXXXXXXXXXXXXX achXXXXXXXXXXXXXX
    """


def _feed_sync(token: str | None, path: Path | None):
    from airtable_cached.ops.pull import _sync

    settings, store = _open(path, must_exist=False)
    return _sync(store, settings, _need_token(token))


@webhooks.command("list")
@click.option("--base", "bases", multiple=True, help="Only these bases (default: every cached base).")
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def webhooks_list(bases: tuple[str, ...], token: str | None, path: Path | None, as_json: bool) -> None:
    """Every webhook Airtable has on the bases, marking the one this cache file polls ("ours").

    Airtable allows 10 per base; a webhook nobody polls expires after 7 days.

    \b
    Example:
      AIRTABLE_API_KEY=pat... airtable-cached webhooks list --base appXXXXXXXXXXXXXX --json
    """
    from airtable_cached.sync.refresh import list_webhooks

    with _feed_sync(token, path) as sync:
        names = list(bases) or sync.engine.store.replica.base_ids()
        found = list_webhooks(sync, names)
    if as_json:
        return _emit_json(found)
    rows = [[h["base_id"], h["id"], "yes" if h["ours"] else "", h["enabled"], h["notification_url"] or "(polled)",
             h["expires"], ",".join(h["data_types"] or [])] for h in found]
    click.echo(_table(rows, ["base", "webhook", "ours", "enabled", "notifies", "expires", "data"]) if rows
               else "no webhooks")


@webhooks.command("remove")
@click.argument("base")
@click.argument("ids", nargs=-1, required=True)
@_token_option
@_path_option
@_json_option
@_fail_cleanly
def webhooks_remove(base: str, ids: tuple[str, ...], token: str | None, path: Path | None, as_json: bool) -> None:
    """Delete webhooks from a base. If one is this cache file's, the next refresh makes a new one
    and pulls each table of the base whole once.

    \b
    Example:
      AIRTABLE_API_KEY=pat... airtable-cached webhooks remove appXXXXXXXXXXXXXX achXXXXXXXXXXXXXX
    """
    from airtable_cached.sync.refresh import remove_webhooks

    with _feed_sync(token, path) as sync:
        removed = remove_webhooks(sync, base, list(ids))
    if as_json:
        return _emit_json({"removed": removed})
    click.echo(f"removed {len(removed)} webhook(s) from {base}: {', '.join(removed)}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo(args: tuple[str, ...]) -> None:
    """Run the README's main job against a local fake Airtable (arguments go to the demo).

    \b
    Example:
      airtable-cached demo
    """
    from airtable_cached.ops.demo import main as demo_main

    code = demo_main(list(args))
    sys.exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
