"""One-writer claims use the store's exclusive create: a NODE_ID, experiment.json.

Two processes that start at the same moment both read "nobody here yet"; only the
exclusive create decides between them. Run on a local folder and on an S3 bucket
(moto server), where the claim is atomic.
"""

from __future__ import annotations

import threading

import pytest

from rgym_exp.config import load_config
from rgym_exp.drive.backends import open_store
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.heartbeat import DuplicateNode, Heartbeat
from rgym_exp.records import PeerRecord
from rgym_exp.waiting import Waiter
from tests.signing import node_exp


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path, monkeypatch):
    if request.param == "folder":
        return str(tmp_path / "drive")
    from tests.s3_server import new_bucket, s3_endpoint, s3_env
    endpoint = s3_endpoint()
    for key, value in s3_env(endpoint).items():
        monkeypatch.setenv(key, value)
    return f"s3://{new_bucket(endpoint)}/swarm"


def node(location: str, node_id: str = "w1", blind: bool = False) -> Heartbeat:
    """A process's heartbeat on its own store; ``blind``: its first look at the record
    found nothing, as when two processes look before either has written."""
    hb = Heartbeat(node_exp(open_store(location), node_id), node_id, "worker", 0.2,
                   Waiter(0.05, 5))
    if blind:
        real, looks = hb._read, []
        hb._read = lambda: (None if not looks.append(1) and len(looks) == 1 else real())
    return hb


def test_a_process_that_looked_at_the_same_moment_loses_the_claim(location):
    first, second = node(location), node(location, blind=True)
    first.claim()
    with pytest.raises(DuplicateNode, match="claimed by another process at the same moment"):
        second.claim()
    record = first.exp.reader.read(PeerRecord, first.path)
    assert record.session == first.record.session and record.beat == 0


def test_of_processes_racing_for_one_node_id_exactly_one_runs(location):
    racers = [node(location) for _ in range(4)]
    start, outcome = threading.Barrier(len(racers)), {}

    def race(k, hb):
        start.wait()
        try:
            hb.claim()
            hb.start()  # a live winner: anyone who looks later sees its beat advance
            outcome[k] = "runs"
        except DuplicateNode:
            outcome[k] = "refused"
    threads = [threading.Thread(target=race, args=(k, hb)) for k, hb in enumerate(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for hb in racers:
        hb._done.set()
    assert sorted(outcome.values()) == ["refused"] * 3 + ["runs"], outcome
    winner = racers[[k for k, v in outcome.items() if v == "runs"][0]]
    assert winner.exp.reader.read(PeerRecord, winner.path).session == winner.record.session


def test_a_restarted_node_claims_the_next_beat_after_its_dead_predecessor(location):
    old = node(location)
    old.claim()
    old.record.pid = 999_999_999  # the old process is gone
    old.beat()
    new = node(location)
    new.claim()
    assert new.record.beat == 2
    assert new.exp.store.read(new.exp.layout.claim("w1", 2), 100) == new.record.session.encode()


def test_two_coordinators_creating_experiment_json_at_once_agree_on_one(location, tmp_path):
    cfg, _ = load_config({"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": location,
                          "NODE_ID": "coord", "EXPERIMENT_NAME": "exp"})
    first, second = Experiment.open(cfg), Experiment.open(cfg)
    source = question_source(cfg)
    real, looks = second.read_info, []
    second.read_info = lambda **kw: (None if not looks.append(1) and len(looks) == 1
                                     else real(**kw))
    made = first.create_or_check(source)
    seen = second.create_or_check(source)  # it looked before the first wrote
    assert seen.instance == made.instance and len(looks) == 2
    assert first.reader.read(type(made), first.layout.experiment_file).instance == made.instance
