"""The exchange: J fresh, useful peer groups per round, at a cost that does not grow with
the swarm. Peers here behave like real ones: thin pools (a quarter of groups with signal),
files that show up late, echoes of other nodes' groups, a sender that lies about its
file, partial credit."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from genrl.data import ReasoningGymSource, parse_tasks
from genrl.rewards import RewardRule
from genrl.rollouts import RolloutGroup, encode_rollouts
from genrl.sapo import ExternalSelector, group_key
from genrl.scoring import Scorer
from rgym_exp.drive.store import FolderStore
from rgym_exp.exchange import READ_BUDGET_PER_GROUP, RolloutExchange
from rgym_exp.records import Submission
from tests.signing import node_exp, register, signer, write_as

SOURCE = ReasoningGymSource(parse_tasks("chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=2}"),
                            seed=3)
RULE = Scorer(RewardRule())
J = 4


class Lagging:
    """A folder whose new files appear in listings only ``lag`` seconds after they were
    written (Drive's late visibility), on a clock the test moves."""

    def __init__(self, inner):
        self.inner, self.description, self.now, self.shown_at = inner, "lagging", 0.0, {}
        self.reads, self.read_paths = 0, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, path, data, lag=0.0):
        self.shown_at[path] = self.now + lag
        self.inner.write(path, data)

    def list(self, folder):
        return [e for e in self.inner.list(folder)
                if self.shown_at.get(f"{folder}/{e.name}", 0.0) <= self.now]

    def read(self, path, max_bytes):
        self.reads += 1
        self.read_paths.append(path)
        return self.inner.read(path, max_bytes)


class Waiter:
    def __init__(self, store):
        self.store = store

    def pause(self, seconds):
        self.store.now += seconds


@pytest.fixture
def exp(tmp_path):
    return node_exp(Lagging(FolderStore(str(tmp_path))), "me")


def group(node, r, k, right=0, claim=None, g=8):
    """Question k of node's round r, with ``right`` correct answers among g."""
    q = SOURCE.draw(node, r, k + 1)[k]
    texts = [f"<answer>{q.answer}</answer>"] * right + [
        f"<answer>{int(q.answer) + 1 + i}</answer>" for i in range(g - right)]
    return RolloutGroup(node, r, "m", q.text, q.source, texts, claim or [0.0] * g)


def publish(exp, node, r, groups, lag=0.0, claim=None):
    """What a peer's RolloutExchange.publish writes (optionally with a lie in the name)."""
    signal = sum(len(set(RULE.rewards(SOURCE.regenerate(g.source), g.completions))) > 1
                 for g in groups) if claim is None else claim
    if exp.trust.node_key(exp.layout.root, node) is None:
        register(exp, node)                      # its key, as the node saw it join
    path = exp.layout.rollout(r, node, None, signal)
    exp.store.write(path, signer(exp.store, node).seal(path, encode_rollouts(groups, node, r)),
                    lag=lag)


def thin_round(exp, r, peers, rng, signal=0.25, lag=0.0):
    """Each peer publishes 4 groups, each with signal with probability ``signal``."""
    for n in peers:
        publish(exp, n, r, [group(n, r, k, right=int(rng.integers(1, 8)) if rng.random() < signal
                                  else 0) for k in range(4)], lag=lag)


def gather(exp, selector, r, node="me", **kw):
    ex = kw.pop("exchange", None) or RolloutExchange(exp, node, clock=lambda: exp.store.now)
    return ex.gather(r, J, selector, np.random.default_rng(kw.pop("seed", r)),
                     waiter=Waiter(exp.store), **kw)


def selector(node="me"):
    return ExternalSelector(SOURCE, RULE, node)


def test_a_thin_pool_is_used_whole_and_every_group_used_has_signal(exp):
    publish(exp, "p1", 0, [group("p1", 0, 0, right=3), group("p1", 0, 1)])
    publish(exp, "p2", 0, [group("p2", 0, 0), group("p2", 0, 1, right=1)])
    publish(exp, "p3", 0, [group("p3", 0, 0), group("p3", 0, 1)])            # nothing useful
    got = gather(exp, selector(), 0)
    assert len(got.groups) == 2 and all(g.has_signal for g in got.groups)
    assert got.files_read == 2           # p3 claimed no signal: never read


@pytest.mark.parametrize("peers", [3, 63])
def test_j_is_filled_with_at_most_2j_reads_however_many_nodes_publish(exp, peers):
    rng = np.random.default_rng(peers)
    names = [f"p{k}" for k in range(peers)]
    filled, reads = [], []
    for r in range(8):
        thin_round(exp, r, names, rng)
        exp.store.reads = 0
        got = gather(exp, selector(), r, max_staleness=0)
        usable = sum(len(set(g.rewards)) > 1 for g in got.groups)
        filled.append(len(got.groups))
        reads.append(exp.store.reads)
        assert usable == len(got.groups)
    assert max(reads) <= READ_BUDGET_PER_GROUP * J
    if peers == 63:                      # ~16 usable groups a round: J always filled
        assert filled == [J] * 8 and np.mean(reads) <= J


def test_sampling_is_uniform_over_the_groups_not_over_the_files(exp):
    publish(exp, "rich", 0, [group("rich", 0, k, right=2) for k in range(4)])   # 4 with signal
    publish(exp, "poor", 0, [group("poor", 0, 0, right=2), group("poor", 0, 1)])  # 1 with signal
    counts = Counter()
    for seed in range(400):
        ex = RolloutExchange(exp, "me")
        got = ex.gather(0, 1, selector(), np.random.default_rng(seed))
        counts[got.groups[0].origin] += 1
    assert counts["rich"] + counts["poor"] == 400
    assert 0.72 < counts["rich"] / 400 < 0.88          # 4 of the 5 usable groups: 80%


def test_a_late_current_round_is_waited_for_then_older_rounds_fill_in(exp):
    publish(exp, "p1", 0, [group("p1", 0, k, right=1) for k in range(4)])
    publish(exp, "p1", 1, [group("p1", 1, k, right=1) for k in range(4)], lag=20.0)
    got = gather(exp, selector(), 1, wait_s=60.0, max_staleness=1)
    assert [g.round for g in got.groups] == [1] * J          # waited for the fresh ones
    assert 20.0 <= got.waited_s < 30.0
    exp.store.now = 0.0
    got = gather(exp, selector(), 1, wait_s=5.0, max_staleness=1)
    assert [g.round for g in got.groups] == [0] * J          # too late: last round's
    assert 5.0 <= got.waited_s < 6.0


def test_last_rounds_files_hidden_by_the_listing_lag_count_after_the_wait(exp):
    # fast rounds on Drive: the peer's round-0 file is younger than the listing lag at the
    # first look, and its round-1 file is not written yet; after waiting, round 0 is listed
    # again and fills J (without the second look: nothing at all)
    publish(exp, "p1", 0, [group("p1", 0, k, right=1) for k in range(4)], lag=3.0)
    got = gather(exp, selector(), 1, wait_s=5.0, max_staleness=1)
    assert [g.round for g in got.groups] == [0] * J and got.files_listed == 1
    assert 5.0 <= got.waited_s < 6.0 and got.listings >= 3
    exp.store.now = 0.0
    got = gather(exp, selector(), 1, wait_s=5.0, max_staleness=0)   # no older rounds wanted
    assert got.groups == []


def test_no_waiting_once_every_peer_of_last_round_has_published(exp):
    for r in (0, 1):
        publish(exp, "p1", r, [group("p1", r, 0, right=1), group("p1", r, 1)])
        publish(exp, "p2", r, [group("p2", r, 0), group("p2", r, 1)])
    got = gather(exp, selector(), 1, wait_s=600.0, max_staleness=1)
    assert got.waited_s == 0.0 and len(got.groups) == 2     # one of round 1, one of round 0


def test_no_group_is_trained_on_twice_not_even_after_a_restart(exp, tmp_path):
    publish(exp, "p1", 0, [group("p1", 0, k, right=2) for k in range(6)])
    sel = selector()
    ex = RolloutExchange(exp, "me")
    first = ex.gather(0, J, sel, np.random.default_rng(0))
    second = ex.gather(1, J, sel, np.random.default_rng(1), max_staleness=1)
    assert len(first.groups) == J and len(second.groups) == 2
    assert not {g.key for g in first.groups} & {g.key for g in second.groups}
    # the node restarts: a new process knows what it used from its own submissions
    for r, got in ((0, first), (1, second)):
        write_as(exp.store, "me", exp.layout.submission(r, "me"), Submission(
            r, "me", external=[{"node": g.origin, "round": g.round, "key": g.key} for g in got.groups]))
    fresh, sel2 = RolloutExchange(exp, "me"), selector()
    fresh.recall_used(2, sel2, max_staleness=2)
    again = fresh.gather(2, J, sel2, np.random.default_rng(2), max_staleness=2)
    assert again.groups == [] and sel2.used_before == 6


def test_echoes_of_other_nodes_groups_and_of_our_own_are_not_used_twice(exp):
    mine = group("me", 0, 0, right=2)
    theirs = group("p1", 0, 0, right=2)
    publish(exp, "p1", 0, [theirs])
    echo = [RolloutGroup("echo", 0, "m", g.question, g.source, g.completions, g.rewards)
            for g in (theirs, mine)]
    publish(exp, "echo", 0, echo)
    sel = selector()
    sel.mark_used([SimpleNamespace(key=group_key(mine.source, mine.completions), round=0)])
    got = gather(exp, sel, 0)
    assert len(got.groups) == 1          # p1's group, once; our own never comes back


def test_a_sender_that_lies_about_its_file_is_read_once_then_ignored(exp):
    rng = np.random.default_rng(0)
    honest = [f"p{k}" for k in range(6)]
    ex = RolloutExchange(exp, "me", clock=lambda: exp.store.now)
    for r in range(6):
        thin_round(exp, r, honest, rng, signal=0.5)
        publish(exp, "liar", r, [group("liar", r, k) for k in range(4)], claim=999)
        before = exp.store.reads
        got = ex.gather(r, J, selector(), np.random.default_rng(r))
        assert exp.store.reads - before <= READ_BUDGET_PER_GROUP * J
        assert all(g.origin != "liar" for g in got.groups)
    assert ex.distrusted == {"liar"}
    # 999 slots of 1,000-odd made it first in line once; after that it is one file among 7
    assert sum("/liar." in p for p in exp.store.read_paths) <= 3


class CrumbSource:
    """Questions whose verifier pays partial credit for near misses, as several
    reasoning-gym tasks do (fraction_simplification 0.01 / 0.05, propositional_logic 0.25)."""

    def regenerate(self, source):
        from genrl.data import Question
        return Question(f"q{source['k']}", source, "10",
                        verify=lambda a: {"10": 1.0, "11": 0.0625}.get(a, 0.0))


def test_partial_credit_alone_is_no_signal_and_a_right_answer_is(exp):
    def peer_group(node, k, answers):
        texts = [f"<answer>{a}</answer>" for a in answers]
        return RolloutGroup(node, 0, "m", f"q{k}", {"k": k}, texts, [0.0] * len(texts))
    publish(exp, "p1", 0, [peer_group("p1", 0, ["11", "12", "12", "12"])], claim=1)   # crumbs
    publish(exp, "p2", 0, [peer_group("p2", 1, ["10", "12", "12", "12"])], claim=1)   # a success
    got = RolloutExchange(exp, "me").gather(0, J, ExternalSelector(CrumbSource(), RULE, "me"),
                                            np.random.default_rng(0))
    assert [g.origin for g in got.groups] == ["p2"] and got.groups[0].rewards == [1, 0, 0, 0]
    paid = Scorer(RewardRule(partial_credit=True))          # the paper's rule: crumbs count
    got = RolloutExchange(exp, "me").gather(0, J, ExternalSelector(CrumbSource(), paid, "me"),
                                            np.random.default_rng(0))
    assert sorted(g.origin for g in got.groups) == ["p1", "p2"]
