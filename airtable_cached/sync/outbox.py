"""The durable write queue's pure side: planning what claimed writes amount to.

The queue itself (append, claim, ack, retry, dead-letter, id remapping) is the store's ``Outbox``
(``airtable_cached/store/contract.py``; in SQLite ``airtable_cached/store/sqlite/outbox.py``). On disk
the queue always holds what the agent did; coalescing happens only when a batch is planned
(:func:`plan`), so a crash never leaves a half-merged write behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from airtable_cached.store.claims import touches_links as _touches_links
from airtable_cached.store.types import Op

MAX_RECORDS_PER_REQUEST = 10

__all__ = ["MAX_RECORDS_PER_REQUEST", "Op", "Send", "chunk_requests", "components", "plan"]


@dataclass
class Send:
    """What one record's claimed writes amount to: at most one record in one request."""

    tid: int
    base_id: str
    table_ref: str
    kind: str  # create | update | replace | delete | none
    record_id: str
    fields: dict | None
    typecast: bool
    merge_on: list[str] | None
    seqs: list[int] = field(default_factory=list)
    #: A create that was sent before and whose answer never came back: reconcile before re-sending.
    uncertain: bool = False
    #: Airtable's time (ISO) before that create was first sent: what it made was created after it.
    created_after: str | None = None
    #: The agent's calls whose writes this send carries.
    calls: set[int] = field(default_factory=set)
    #: Link writes planned before this send's last one (see :func:`plan`).
    epoch: int = 0
    #: It changes links: it keeps its place in the queue order (see :func:`chunk_requests`).
    ordered: bool = False


# -- planning --------------------------------------------------------------------------------------


def plan(ops: Iterable[Op], link_fields: Mapping[int, frozenset[str]] | None = None) -> list[Send]:
    """Coalesce each record's claimed writes into one send, in the order records first appear.

    Successive updates merge into one PATCH, a PUT absorbs what came before, a create absorbs later
    updates, and a create followed by a delete sends nothing at all (unless the create asked for
    ``typecast``, whose side effects, new select options, records made for links, stay in Airtable).

    Writes that change links (``link_fields``: per table, its link fields with an inverse; a
    delete or a PUT clears them too) change the other side's records as well, so their order
    across records matters: a record's link write made after another record's link write is not
    merged into its earlier send, and such sends are marked ``ordered`` (``chunk_requests`` keeps
    them in queue order).
    """
    link_fields = link_fields or {}
    sends: dict[tuple[int, str], Send] = {}
    out: list[Send] = []
    epoch = 0  # link writes so far: a send made at another epoch has seen other records' link writes
    for op in ops:
        key = (op.tid, op.record_id)
        touches = _touches_links(op, link_fields.get(op.tid, frozenset()))
        send = sends.get(key)
        if send is not None and touches and send.epoch != epoch:
            send = None  # another record's link write came between: this one goes after it
        elif send is not None and op.op == "delete" and send.kind == "create" and send.typecast:
            send = None  # made, then deleted: a typecast may add select options or linked records
        elif send is not None and send.merge_on and op.op in ("update", "replace") and (
                op.op == "replace" or set(send.merge_on) & set(op.fields or {})):
            send = None  # an upsert's key changed later: the upsert is sent on the key it was made with
        if send is None:
            send = sends[key] = Send(
                tid=op.tid,
                base_id=op.base_id,
                table_ref=op.table_ref,
                kind=op.op,
                record_id=op.record_id,
                fields=dict(op.fields or {}) if op.op != "delete" else None,
                typecast=op.typecast,
                merge_on=op.merge_on,
                seqs=[op.seq],
                uncertain=op.op == "create" and (op.state == "inflight" or _left_uncertain(op)),
                calls={op.call_id},
                epoch=epoch,
                created_after=_last_error(op).get("created_after") if op.op == "create" else None,
            )
            out.append(send)
        else:
            _merge(send, op)
        if touches:
            epoch += 1
            send.epoch = epoch
            send.ordered = True
    return out


def _merge(send: Send, op: Op) -> None:
    send.seqs.append(op.seq)
    send.calls.add(op.call_id)
    send.typecast = send.typecast or op.typecast
    if op.op == "delete":
        if send.kind in ("create", "none"):
            # Nothing to send; the fields stay: a create sent before with its answer lost may
            # have made a record, and finding it (to delete it) needs what it was made of.
            send.kind = "none"
        else:
            send.kind = "delete"
            send.fields = None
    elif send.kind == "none":
        return  # cannot happen: writes to a deleted record are refused at the call
    elif op.op == "replace":
        send.fields = dict(op.fields or {})
        send.kind = "create" if send.kind == "create" else "replace"
    else:  # update
        merged = dict(send.fields or {})
        merged.update(op.fields or {})
        send.fields = merged


def _left_uncertain(op: Op) -> bool:
    """A create whose last attempt may have made the record although no answer said so."""
    return bool(_last_error(op).get("uncertain"))


def _last_error(op: Op) -> dict:
    if not op.last_error:
        return {}
    try:
        error = json.loads(op.last_error)
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def chunk_requests(sends: Iterable[Send]) -> list[list[Send]]:
    """Group sends that can share a request (same table, kind, typecast and key), 10 at most, in
    requests sent in order.

    Rules that keep Airtable's answers what they would have been without the cache:
    - creates keep the order of the calls (Airtable's natural order and ``createdTime`` follow
      the requests), and ``ordered`` sends (link writes, see :func:`plan`) keep queue order: both
      only join the latest request;
    - a record's later send goes in a later request than its earlier one (a created record's id
      is known only once that request is answered);
    - the sends of one call (or of calls coalesced together, see :func:`components`) go in one
      request whenever they fit, so that Airtable applies or refuses the call whole.
    """
    live = [s for s in sends if s.kind != "none"]
    remaining: dict[tuple, int] = {}  # (component, request key) -> its sends not placed yet
    slot_of: dict[int, tuple] = {}
    for number, component in enumerate(components(live)):
        for send in component:
            slot = (number, _request_key(send))
            slot_of[id(send)] = slot
            remaining[slot] = remaining.get(slot, 0) + 1
    batches: list[list[Send]] = []
    open_batch: dict[tuple, int] = {}  # request key -> index of the batch that key may still join
    floor: dict[tuple[int, str], int] = {}  # record -> index of the batch holding its last send
    started: set[tuple] = set()
    for send in live:
        key = _request_key(send)
        slot = slot_of[id(send)]
        tail = len(batches) - 1
        index = open_batch.get(key)
        if send.kind == "create" or send.ordered:
            index = tail if index == tail else None
        if index is not None and index <= floor.get((send.tid, send.record_id), -1):
            index = None  # a record's later send goes in a later request (its id may come from the earlier)
        # A call starts in a request only if all of it fits there.
        needed = remaining[slot] if slot not in started else 1
        if index is None or len(batches[index]) + needed > MAX_RECORDS_PER_REQUEST:
            batches.append([])
            index = len(batches) - 1
            open_batch[key] = index
        batches[index].append(send)
        started.add(slot)
        remaining[slot] -= 1
        floor[(send.tid, send.record_id)] = index
    return batches


def _request_key(send: Send) -> tuple:
    # An upsert's creates and its updates (records it matched) share one request.
    kind = "upsert" if send.merge_on and send.kind in ("create", "update") else send.kind
    return (send.tid, kind, send.typecast, tuple(send.merge_on or ()), send.uncertain)


def components(sends: list[Send]) -> list[list[Send]]:
    """Sends grouped by the calls they carry: two sends share a group when some call wrote both
    (directly, or through a send that coalesced writes of several calls). In order of first send."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for send in sends:
        calls = sorted(send.calls) or [-id(send)]
        for other in calls[1:]:
            parent[find(other)] = find(calls[0])
    groups: dict[int, list[Send]] = {}
    for send in sends:
        root = find(min(send.calls) if send.calls else -id(send))
        groups.setdefault(root, []).append(send)
    return list(groups.values())


