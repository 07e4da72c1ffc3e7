"""Credit (rgym_exp/credit.py): counted by origin from submissions or from the workers' running
tallies, the same answer both ways; hostile entries are skipped, never trusted.
(A real swarm's credit table and status columns: tests/test_takehome.py.)"""

from __future__ import annotations

import math

import pytest

from rgym_exp.credit import Tally, count_submissions, from_peers, leaderboard, markdown_table
from rgym_exp.records import PeerRecord, Submission
from rgym_exp.series import NodeSeries


def sub(node: str, round_: int, used: list) -> Submission:
    return Submission(round=round_, node_id=node, model="m", finished_at=0.0, metrics={},
                      external=[{"node": o, "round": round_, "key": f"k{i}", "reward_mean": r}
                                for i, (o, r) in enumerate(used)])


SUBS = [sub("a", 0, [("b", 0.5), ("c", 1.0)]), sub("b", 0, [("a", 0.25)]),
        sub("a", 1, [("b", 0.75)]), sub("c", 1, [("b", 0.25), ("a", 0.75)])]


def test_each_node_is_credited_with_the_groups_others_trained_on():
    credit = count_submissions(SUBS)
    b = credit["b"]
    assert (b.used_by_others, b.users, b.reward_mean) == (3, {"a", "c"}, pytest.approx(0.5))
    assert (credit["a"].used_by_others, credit["a"].users) == (2, {"b", "c"})
    assert credit["a"].reward_mean == pytest.approx(0.5)
    assert (credit["c"].used_by_others, credit["c"].reward_mean) == (1, 1.0)
    assert {n: c.used_from_others for n, c in credit.items()} == {"a": 3, "b": 1, "c": 2}


def test_the_running_tallies_in_peer_records_give_the_same_credit():
    tallies = {}
    for s in SUBS:
        tallies.setdefault(s.node_id, Tally()).add(s.external)
    records = {n: PeerRecord(n, "worker", "s", 0, "running", used_from=t.used_from)
               for n, t in tallies.items()}
    by_peers, by_subs = from_peers(records), count_submissions(SUBS)
    for node in "abc":
        assert by_peers[node].used_by_others == by_subs[node].used_by_others
        assert by_peers[node].reward_mean == pytest.approx(by_subs[node].reward_mean)
        assert by_peers[node].users == by_subs[node].users


def test_a_restarted_worker_takes_its_tally_back():
    first = Tally()
    stored = first.add(SUBS[0].external)
    again = Tally(stored)
    assert again.add(SUBS[2].external) == {"b": [2, 1.25], "c": [1, 1.0]}


@pytest.mark.parametrize("entry", [
    {"node": "b", "reward_mean": math.nan}, {"node": "b", "reward_mean": "1"},
    {"node": "b", "reward_mean": True}, {"node": "../x", "reward_mean": 1.0},
    {"node": 7, "reward_mean": 1.0}, {"reward_mean": 1.0}, "b", None])
def test_a_malformed_external_entry_is_skipped(entry):
    s = Submission(round=0, node_id="a", model="m", finished_at=0.0, metrics={},
                   external=[entry, {"node": "b", "reward_mean": 1.0}])
    assert count_submissions([s])["b"].used_by_others == 1


def test_a_node_is_never_credited_for_using_its_own_groups():
    assert count_submissions([sub("a", 0, [("a", 1.0)])])["a"].used_by_others == 0


@pytest.mark.parametrize("tally", [
    {"b": [1, 0.5, 9]}, {"b": [-1, 0.5]}, {"b": [1.5, 0.5]}, {"b": [1, math.inf]},
    {"b": [1, 1e12]}, {"b": "1"}, {"../x": [1, 0.5]}, {"b": [True, 0.5]}])
def test_a_hostile_tally_in_a_peer_record_counts_nothing(tally):
    record = PeerRecord("a", "worker", "s", 0, "running", used_from=tally)
    assert from_peers({"a": record}).get("b") is None
    assert Tally(tally).used_from == {}


def test_the_leaderboard_puts_the_most_used_first_beside_own_reward_and_accuracy():
    series = {"a": NodeSeries("a", rounds=[0, 1], rewards=[0.2, 0.4], eval_rounds=[0, 1],
                              eval_accuracy=[0.1, 0.3]),
              "d": NodeSeries("d", rounds=[0], rewards=[0.0])}
    rows = leaderboard(count_submissions(SUBS), series)
    assert [r["node"] for r in rows] == ["b", "a", "c", "d"]
    table = markdown_table(rows).splitlines()
    assert table[2] == "| b | 3 | 2 | 0.500 | 1 | 0 | - | - |"
    assert table[3] == "| a | 2 | 2 | 0.500 | 3 | 2 | 0.300 | 0.300 |"
    assert table[5] == "| d | 0 | 0 | - | 0 | 1 | 0.000 | - |"


def test_a_node_restarting_with_its_node_id_keeps_its_tally(tmp_path):
    from rgym_exp.drive.store import FolderStore
    from rgym_exp.heartbeat import Heartbeat
    from rgym_exp.waiting import Waiter
    from tests.signing import node_exp
    exp = node_exp(FolderStore(str(tmp_path)), "w1")
    first = Heartbeat(exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    first.claim()
    first.update(used_from=Tally().add(SUBS[0].external))
    first.close("stopped")
    again = Heartbeat(exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    again.claim()
    assert again.record.used_from == {"b": [1, 0.5], "c": [1, 1.0]}
    assert Tally(again.record.used_from).used_from == again.record.used_from
