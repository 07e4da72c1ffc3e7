"""What a node asks of the folder, counted: heartbeats written at most once per interval,
ownership read only when the record can have changed hands, no log check when no log
changed, NODE_IDs unique regardless of case, the coordinator's peers from one listing
with reads only of records that changed. (bench/storage_scale.py measures whole swarms.)
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from rgym_exp.drive.store import FolderStore
from rgym_exp.heartbeat import DuplicateNode, Heartbeat
from rgym_exp.readers import Peers
from rgym_exp.records import PeerRecord
from rgym_exp.waiting import Waiter
from tests.signing import node_exp, write_as


class Counting:
    """A folder store that counts calls by (operation, area of the experiment folder)."""

    def __init__(self, root):
        self.inner, self.calls = FolderStore(root), Counter()
        self.description = self.inner.description

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def counted(*args):
            path = args[1] if name == "upload" else args[0]
            self.calls[(name, path.split("/")[2] if path.count("/") >= 2 else path)] += 1
            return method(*args)
        return counted


def experiment(root, node="w1"):
    """The folder as node ``node`` sees it (signing as it), through a counting store."""
    return node_exp(Counting(root), node)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_heartbeat_is_written_once_per_interval_whatever_the_updates(tmp_path):
    exp = experiment(str(tmp_path))
    hb = Heartbeat(exp, "w1", "worker", 10.0, Waiter(0.05, 5))
    hb.claim()
    hb.start()
    for k in range(70):                  # a busy worker changing phase every 50 ms for 3.5 s
        hb.update(phase=f"step {k}", round=k)
        time.sleep(0.05)
    hb.close("finished")
    assert exp.store.calls[("write", "peers")] == 2       # the claim and the final record
    record = exp.reader.read(PeerRecord, hb.path)
    assert record.phase == "finished" and record.round == 69   # updates reach the next write


def test_ownership_is_read_only_when_the_record_can_have_changed_hands(tmp_path):
    exp = experiment(str(tmp_path))
    hb = Heartbeat(exp, "w1", "worker", 10.0, Waiter(0.05, 5))
    hb.claim()
    reads = lambda: exp.store.calls[("read", "peers")]  # noqa: E731
    cases = [(5, 5, False),      # (our last write, our last read) seconds ago: just beat
             (16, 5, True),      # no write for 1.6 intervals: frozen? a takeover needs 2.5
             (5, 41, True),      # beating, but 4 intervals since we last looked (stale views)
             (5, 20, False)]
    for written, verified, read in cases:
        before, now = reads(), time.monotonic()
        hb._written_at, hb._verified_at = now - written, now - verified
        hb.ensure_owner()
        assert reads() - before == int(read), (written, verified)


def test_a_process_frozen_past_a_takeover_writes_nothing_more(tmp_path):
    exp = experiment(str(tmp_path))
    old = Heartbeat(exp, "w1", "worker", 1.0, Waiter(0.05, 5))
    old.claim()
    newer = PeerRecord(node_id="w1", role="worker", session="newcomer", beat=5, status="running")
    write_as(exp.store, "w1", old.path, newer)         # taken over while old was frozen
    old._written_at -= 3                                # it wakes 3 intervals later
    old.beat()
    assert old.taken_over.is_set()
    assert exp.reader.read(PeerRecord, old.path).session == "newcomer"


def test_node_ids_that_differ_only_in_case_cannot_both_run(tmp_path):
    Heartbeat(experiment(str(tmp_path), "Alice"), "Alice", "worker", 1.0, Waiter(0.05, 5)).claim()
    with pytest.raises(DuplicateNode, match="differs from the registered node Alice only in case"):
        Heartbeat(experiment(str(tmp_path), "alice"), "alice", "worker", 1.0,
                  Waiter(0.05, 5)).claim()
    Heartbeat(experiment(str(tmp_path), "Alice"), "Alice", "worker", 1.0,
              Waiter(0.05, 5))                                 # the same name may come back


def test_log_copies_check_ownership_only_when_a_log_changed(tmp_path):
    from rgym_exp.config import load_config
    from rgym_exp.experiment import Experiment
    from rgym_exp.node_log import NodeLogs
    cfg, _ = load_config({"GDRIVE_PATH": str(tmp_path / "drive"), "NODE_ID": "w1",
                          "XDG_CONFIG_HOME": str(tmp_path), "CACHE_DIR": str(tmp_path / "cache")})
    exp = Experiment.open(cfg)
    logs = NodeLogs(exp, "w1", cfg.CACHE_DIR, 3600, "INFO")

    class Owner:
        checks = 0

        def owns(self):
            Owner.checks += 1
            return True
    try:
        logs.start(Owner())
        logs.event("started")
        logs.flush()
        assert Owner.checks == 1
        for _ in range(5):
            logs.flush()                 # nothing changed: no check, no upload
        assert Owner.checks == 1
        logs.metric({"round": 0, "reward/mean": 0.5})
        assert Owner.checks == 2
    finally:
        logs.close()


def test_peers_are_one_listing_and_reads_of_the_records_that_changed(tmp_path):
    exp = experiment(str(tmp_path), "coord")
    clock = Clock()
    for k in range(20):
        write_as(exp.store, f"w{k}", exp.layout.peer(f"w{k}"), PeerRecord(
            node_id=f"w{k}", role="worker", session="s", beat=1, status="running"))
    peers = Peers(exp.store, exp.layout, exp.reader, reread_s=300, settle_s=75, clock=clock)
    exp.store.calls.clear()
    assert len(peers.refresh()) == 20
    assert exp.store.calls == Counter({("list", "peers"): 1, ("read", "peers"): 20,
                                       # each key looked up once, in one listing of keys/
                                       ("list", "keys"): 1, ("read", "keys"): 20})
    exp.store.calls.clear()
    clock.now += 15
    write_as(exp.store.inner, "w3", exp.layout.peer("w3"), PeerRecord(
        node_id="w3", role="worker", session="s", beat=2, status="running"))
    views = peers.refresh()
    assert exp.store.calls == Counter({("list", "peers"): 1})     # a beat: seen in the listing
    assert views["w3"].last_change == clock.now and views["w4"].last_change == clock.now - 15
    clock.now += 80                                                # w3 has stopped changing:
    peers.refresh()                                                # its last write may be final
    assert exp.store.calls[("read", "peers")] == 1
    clock.now += 400
    write_as(exp.store.inner, "w5", exp.layout.peer("w5"), PeerRecord(
        node_id="w5", role="worker", session="s", beat=2, status="running"))
    exp.store.calls.clear()
    peers.refresh()                                                # changed, last read long ago
    assert exp.store.calls == Counter({("list", "peers"): 1, ("read", "peers"): 1})


def test_a_stale_record_or_listing_is_no_sign_of_life(tmp_path):
    exp = experiment(str(tmp_path))
    clock = Clock()
    path = exp.layout.peer("w1")
    write_as(exp.store, "w1", path, PeerRecord(node_id="w1", role="worker", session="s", beat=5,
                                               status="running"))
    peers = Peers(exp.store, exp.layout, exp.reader, clock=clock)
    peers.refresh()
    clock.now += 10
    full = f"{tmp_path}/{path}"
    import os
    mtime = os.stat(full).st_mtime
    write_as(exp.store, "w1", path, PeerRecord(node_id="w1", role="worker", session="s", beat=4,
                                               status="running"))  # an older copy served again
    os.utime(full, (mtime - 5, mtime - 5))                         # with an older mtime
    assert peers.refresh()["w1"].last_change == 1000.0
