"""Readers of what many nodes wrote, in one place: the peers and their records, and who
submitted round R. The coordinator, status and report read through here, so they agree
on what a peer is and pay the same small number of storage requests.

Peers (``Peers``): one listing of ``peers/`` per look. A node shows life when its
listing entry's modification time grows or its record's beat grows, each seen on this
reader's own clock: clocks of two machines are never compared, and a stale copy (Drive
serves them) grows neither. So a reader that looks often (the coordinator) needs few
records: one is downloaded only when its listing entry changed (size or modification
time) since this reader last read it, and then only if the node is new, or its entry
has stopped changing for ``settle_s`` (its last write may say it finished or failed),
or the last read is ``reread_s`` old. Readers that look once (status, report) read
every record (both 0).

Submissions: the nodes that submitted round R are the names in its folder. When the
coordinator retires a round it rolls the round's submissions into one file,
``retired/round_R.json`` (``retire_submissions``), and deletes the folder; readers of
old rounds (the report) read that file instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Optional

from genrl.rollouts import parse_json
from rgym_exp.drive.layout import Layout, parse_node_file, parse_round_dir
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.records import PeerRecord, RecordReader, Submission, from_dict

log = logging.getLogger(__name__)
RETIRED_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class PeerView:
    record: PeerRecord
    last_change: float                 # this reader's clock: the last sign of life seen
    mtime: float = 0.0                 # newest modification time its listing entry showed
    read_key: tuple = ()               # (mtime, size) of the entry when last read
    read_at: float = -math.inf         # this reader's clock


class Peers:
    """The peers of an experiment as one reader sees them (see the module doc)."""

    def __init__(self, store: Store, layout: Layout, reader: Optional[RecordReader] = None,
                 reread_s: float = 0.0, settle_s: float = 0.0, clock=time.time):
        self.store, self.layout, self.clock = store, layout, clock
        self.reread_s, self.settle_s = reread_s, settle_s
        self.reader = reader or RecordReader(store)
        self.views: dict[str, PeerView] = {}

    def refresh(self) -> dict[str, PeerView]:
        """One listing of peers/, and reads of the records that changed. Raises StoreError
        when the listing fails."""
        now = self.clock()
        for entry in self.store.list(self.layout.peers_dir):
            node = parse_node_file(entry.name)
            if node is None or entry.is_dir:
                continue
            view, key = self.views.get(node), (entry.mtime, entry.size)
            if view is not None and entry.mtime > view.mtime:
                view.mtime, view.last_change = entry.mtime, now    # rewritten: alive
            if view is not None and (key == view.read_key or (
                    now - view.read_at < self.reread_s and now - view.last_change < self.settle_s)):
                continue
            record = self.reader.read(PeerRecord, self.layout.peer(node))
            if record is None or record.node_id != node:
                continue
            if view is None:
                self.views[node] = PeerView(record, now, entry.mtime, key, now)
                continue
            view.read_key, view.read_at = key, now
            # a beat that did not grow is a stale copy (Drive), not a sign of life
            if record.session != view.record.session or record.beat > view.record.beat:
                view.record, view.last_change = record, now
        return self.views


def read_peers(store: Store, layout: Layout) -> dict[str, PeerRecord]:
    """Every node's record, read once (status and report)."""
    return {node: view.record for node, view in Peers(store, layout).refresh().items()}


def submitted(store: Store, layout: Layout, round_: int) -> set[str]:
    """Nodes whose submission of ``round_`` is in its folder (one listing; no reads)."""
    return {n for n in (parse_node_file(e.name) for e in store.list(layout.submissions_dir(round_))
                        if not e.is_dir) if n}


def read_round(store: Store, layout: Layout, round_: int,
               reader: Optional[RecordReader] = None) -> dict[str, Submission]:
    """The valid submissions in round ``round_``'s folder (one listing + one read each)."""
    reader = reader or RecordReader(store)
    out = {}
    for node in sorted(submitted(store, layout, round_)):
        sub = reader.read(Submission, layout.submission(round_, node))
        if sub is not None and sub.node_id == node and sub.round == round_:
            out[node] = sub
    return out


def read_retired(store: Store, layout: Layout, round_: int) -> dict[str, Submission]:
    """The submissions rolled into ``retired/round_R.json`` ({} if there is none or it is
    unusable: untrusted input, checked like every record)."""
    try:
        data = store.read(layout.retired_submissions(round_), RETIRED_MAX_BYTES)
        doc = parse_json(data, RETIRED_MAX_BYTES) if data is not None else None
    except (StoreError, ValueError) as exc:
        log.warning("retired submissions of round %d unusable: %s", round_, exc)
        return {}
    out = {}
    for item in (doc.get("submissions") if isinstance(doc, dict) else None) or []:
        try:
            sub = from_dict(Submission, item)
        except (ValueError, TypeError):
            continue
        if sub.round == round_ and parse_node_file(f"{sub.node_id}.json") == sub.node_id:
            out[sub.node_id] = sub
    return out


def retired_rounds(store: Store, layout: Layout) -> list[int]:
    """Rounds whose submissions were rolled into retired/ (one listing)."""
    return sorted(r for r in (parse_round_dir(e.name[:-5]) for e in store.list(layout.retired_root)
                              if e.name.endswith(".json") and not e.is_dir) if r is not None)


def every_round(store: Store, layout: Layout):
    """(round, {node: Submission}) for every round with submissions, oldest first: retired
    rounds from their one file, live ones from their folder (a round in both: the live
    files win). Serves the report's series and the credit count alike."""
    reader = RecordReader(store)
    retired = set(retired_rounds(store, layout))
    live = {r for r in (parse_round_dir(e.name) for e in store.list(layout.submissions_root))
            if r is not None}
    for r in sorted(retired | live):
        found = read_retired(store, layout, r) if r in retired else {}
        if r in live:
            found.update(read_round(store, layout, r, reader))
        yield r, found


def retire_submissions(store: Store, layout: Layout, round_: int,
                       reader: Optional[RecordReader] = None, merge: bool = True) -> int:
    """Coordinator: roll round ``round_``'s submissions into retired/round_R.json (merged,
    if ``merge``, with what an interrupted earlier try wrote there), then delete the
    round's folder. Returns how many submissions the file holds."""
    subs = {**(read_retired(store, layout, round_) if merge else {}),
            **read_round(store, layout, round_, reader)}
    doc = {"round": round_, "submissions": [asdict(subs[n]) for n in sorted(subs)]}
    store.write(layout.retired_submissions(round_),
                json.dumps(doc, allow_nan=False, default=str).encode())
    store.delete(layout.submissions_dir(round_))
    return len(subs)
