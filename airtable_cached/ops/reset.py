"""``reset``: drop cached records (one table or all) so the next read pulls again."""

from __future__ import annotations

from airtable_cached.ops.errors import MaintenanceError
from airtable_cached.store.contract import Replica
from airtable_cached.store.sqlite import Store


def resolve_tables(replica: Replica, table: str | None) -> list[int]:
    """``None``: every table. Else ``BASE/TABLE`` or a bare table name or id (unique across bases)."""
    if table is None:
        return replica.table_tids()
    if "/" in table:
        base_id, alias = table.split("/", 1)
        tids = replica.tids_named(alias, base_id)
    else:
        tids = replica.tids_named(table)
    if not tids:
        raise MaintenanceError(f"no cached table {table!r}")
    if len(tids) > 1:
        raise MaintenanceError(f"{table!r} names tables in several bases; write BASE/TABLE")
    return tids


def reset(store: Store, table: str | None = None, include_queue: bool = False) -> dict:
    """Drop cached records (one table or all) so the next read pulls again.

    The queue is kept unless ``include_queue``: records with queued writes keep their rows so the
    agent still sees its own writes, and the next pull rebases them. Table names, ids and aliases
    are kept; the cached schema is dropped (the next pull fetches it again).
    """
    with store.write() as unit:
        tids = resolve_tables(unit.replica, table)
        result = {"tables": len(tids), "records": 0, "writes": 0}
        for tid in tids:
            if include_queue:
                result["writes"] += unit.outbox.forget_table(tid)
            result["records"] += unit.replica.delete_table_records(tid, keep_queued=not include_queue)
            unit.replica.drop_views(tid)
            unit.replica.forget_table_pull(tid)
    return result
