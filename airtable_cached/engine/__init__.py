"""The local Airtable (the engine): the facade front-ends use, and the names other modules import."""

from airtable_cached.engine.facade import Engine
from airtable_cached.engine.paging import KEPT_FINISHED, MAX_SNAPSHOT_IDS, MAX_SNAPSHOTS, OFFSET_TTL
from airtable_cached.engine.ports import SyncPort
from airtable_cached.engine.routing import Route, route
from airtable_cached.engine.stats import StatsRecorder
from airtable_cached.engine.tables import TableInfo
from airtable_cached.engine.writes import MAX_RECORDS_PER_WRITE

__all__ = [
    "KEPT_FINISHED", "MAX_RECORDS_PER_WRITE", "MAX_SNAPSHOTS", "MAX_SNAPSHOT_IDS", "OFFSET_TTL",
    "Engine", "Route", "StatsRecorder", "SyncPort", "TableInfo", "route",
]
