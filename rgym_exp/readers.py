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
every record (both 0). Records are verified (rgym_exp/trust.py): a node whose record
was last found refused (rewritten by someone without its key) shows life only by a
verified beat, never by its listing entry, and its record is read at every change.

Submissions: the names in a round's folder say who may have submitted it
(``submitted``: one listing, no reads); ``verified`` keeps those whose file is signed
by its node (one read each, once). When the coordinator retires a round it rolls the
round's submission files, as signed, into one file it signs, ``retired/round_R.json``
(``retire_submissions``), and deletes the folder; readers of old rounds (the report)
read that file instead, verifying each submission in it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

from rgym_exp.drive.layout import Layout, parse_node_file, parse_round_dir
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.records import RECORD_MAX_BYTES, PeerRecord, RecordReader, Submission, parse
from rgym_exp.trust import Refused, parse_record

log = logging.getLogger(__name__)
RETIRED_MAX_BYTES = 64 * 1024 * 1024
MAX_RETIRED = 4096                    # submissions read from one retired round


@dataclass
class PeerView:
    record: PeerRecord
    last_change: float                 # this reader's clock: the last sign of life seen
    mtime: float = 0.0                 # newest modification time its listing entry showed
    read_key: tuple = ()               # (mtime, size) of the entry when last read
    read_at: float = -math.inf         # this reader's clock
    suspect: bool = False              # its last read was refused: entry changes are no life


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
                view.mtime = entry.mtime
                if not view.suspect:
                    view.last_change = now                          # rewritten: alive
            if view is not None and (key == view.read_key or (not view.suspect and (
                    now - view.read_at < self.reread_s and now - view.last_change < self.settle_s))):
                continue
            refused = self.reader.refused
            record = self.reader.read(PeerRecord, self.layout.peer(node))
            if record is None or record.node_id != node:
                if view is not None and self.reader.refused > refused:
                    view.read_key, view.read_at, view.suspect = key, now, True
                continue
            if view is None:
                self.views[node] = PeerView(record, now, entry.mtime, key, now)
                continue
            view.read_key, view.read_at = key, now
            # a beat that did not grow is a stale copy (Drive), not a sign of life
            if record.session != view.record.session or record.beat > view.record.beat:
                view.record, view.last_change, view.suspect = record, now, False
        return self.views


def read_peers(store: Store, layout: Layout) -> dict[str, PeerRecord]:
    """Every node's record, read once (status and report)."""
    return {node: view.record for node, view in Peers(store, layout).refresh().items()}


def submitted(store: Store, layout: Layout, round_: int) -> set[str]:
    """Nodes with a file in ``round_``'s submissions folder (one listing; no reads): who may
    have submitted it. Only ``verified`` says who did."""
    return {n for n in (parse_node_file(e.name) for e in store.list(layout.submissions_dir(round_))
                        if not e.is_dir) if n}


def _submission(reader: RecordReader, layout: Layout, round_: int, node: str,
                data: Optional[bytes] = None) -> Optional[tuple[Submission, bytes]]:
    """(submission, its signed bytes) of ``node`` in round ``round_``, verified; None when
    there is none or it is unusable (counted by ``reader``). ``data``: the file's bytes,
    if in hand (from a retired round's file)."""
    path = layout.submission(round_, node)
    try:
        if data is None:
            data = reader.store.read(path, RECORD_MAX_BYTES)
        if data is None:
            return None
        sub = parse(Submission, reader.trust.open(path, data))
    except Refused as exc:
        reader.refused += 1
        log.debug("refusing %s", exc)
        return None
    except (StoreError, ValueError, TypeError) as exc:
        reader.unreadable += 1
        log.debug("ignoring %s: %s", path, exc)
        return None
    return (sub, data) if sub.node_id == node and sub.round == round_ else None


def verified(reader: RecordReader, layout: Layout, round_: int, names: set[str],
             known: dict) -> set[str]:
    """Those of ``names`` whose submission of ``round_`` is signed by them: read once each,
    remembered in ``known`` ({(round, node): verified?}; refused ones are read again when
    a later listing still shows them, a file can be replaced by the real one)."""
    for node in sorted(names):
        if not known.get((round_, node)):
            known[(round_, node)] = _submission(reader, layout, round_, node) is not None
    return {n for n in names if known.get((round_, n))}


def _round_files(store: Store, layout: Layout, round_: int,
                 reader: RecordReader) -> dict[str, tuple[Submission, bytes]]:
    out = {}
    for node in sorted(submitted(store, layout, round_)):
        got = _submission(reader, layout, round_, node)
        if got is not None:
            out[node] = got
    return out


def read_round(store: Store, layout: Layout, round_: int,
               reader: Optional[RecordReader] = None) -> dict[str, Submission]:
    """The verified submissions in round ``round_``'s folder (one listing + one read each)."""
    files = _round_files(store, layout, round_, reader or RecordReader(store))
    return {node: sub for node, (sub, _) in files.items()}


def _retired_files(store: Store, layout: Layout, round_: int,
                   reader: RecordReader) -> dict[str, tuple[Submission, bytes]]:
    """The submissions in ``retired/round_R.json``, the file signed by the coordinator and
    each submission in it by its node ({} if there is none or it is unusable)."""
    path = layout.retired_submissions(round_)
    try:
        body = reader.trust.read(path, RETIRED_MAX_BYTES)
        doc = parse_record(body, RETIRED_MAX_BYTES) if body is not None else None
    except (StoreError, ValueError) as exc:
        log.warning("retired submissions of round %d unusable: %s", round_, exc)
        return {}
    files = doc.get("files") if isinstance(doc, dict) else None
    out = {}
    for node, text in list(files.items())[:MAX_RETIRED] if isinstance(files, dict) else ():
        if isinstance(node, str) and isinstance(text, str) and parse_node_file(f"{node}.json"):
            got = _submission(reader, layout, round_, node, text.encode())
            if got is not None:
                out[node] = got
    return out


def read_retired(store: Store, layout: Layout, round_: int,
                 reader: Optional[RecordReader] = None) -> dict[str, Submission]:
    """The verified submissions rolled into ``retired/round_R.json``."""
    files = _retired_files(store, layout, round_, reader or RecordReader(store))
    return {node: sub for node, (sub, _) in files.items()}


def retired_rounds(store: Store, layout: Layout) -> list[int]:
    """Rounds whose submissions were rolled into retired/ (one listing)."""
    return sorted(r for r in (parse_round_dir(e.name[:-5]) for e in store.list(layout.retired_root)
                              if e.name.endswith(".json") and not e.is_dir) if r is not None)


def every_round(store: Store, layout: Layout, reader: Optional[RecordReader] = None):
    """(round, {node: Submission}) for every round with submissions, oldest first: retired
    rounds from their one file, live ones from their folder (a round in both: the live
    files win). Serves the report's series and the credit count alike."""
    reader = reader or RecordReader(store)
    retired = set(retired_rounds(store, layout))
    live = {r for r in (parse_round_dir(e.name) for e in store.list(layout.submissions_root))
            if r is not None}
    for r in sorted(retired | live):
        found = read_retired(store, layout, r, reader) if r in retired else {}
        if r in live:
            found.update(read_round(store, layout, r, reader))
        yield r, found


def retire_submissions(store: Store, layout: Layout, round_: int, reader: RecordReader,
                       merge: bool = True) -> int:
    """Coordinator: roll round ``round_``'s submission files, as their nodes signed them,
    into retired/round_R.json (merged, if ``merge``, with what an interrupted earlier try
    wrote there), signed with ``reader``'s key, then delete the round's folder. Returns how
    many submissions the file holds."""
    files = {**(_retired_files(store, layout, round_, reader) if merge else {}),
             **_round_files(store, layout, round_, reader)}
    doc = {"round": round_, "files": {n: files[n][1].decode() for n in sorted(files)}}
    reader.trust.write(layout.retired_submissions(round_),
                       json.dumps(doc, ensure_ascii=False).encode())
    store.delete(layout.submissions_dir(round_))
    return len(files)
