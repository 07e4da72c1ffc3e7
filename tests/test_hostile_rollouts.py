"""A hostile peer's rollout file in a running swarm (a member: its key registered, its file
signed): completions built to run a shell command (Python eval, exec, sympy) for every task
whose scorer evaluates and every default task. The honest workers read, re-score and even
train on the file's groups; no command runs."""

import json
import os

import pytest

from genrl.data import ReasoningGymSource, TaskSpec, parse_tasks
from genrl.evaluation import EVAL_SEED
from genrl.rollouts import RolloutGroup, encode_rollouts
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.store import FolderStore
from rgym_exp.records import PeerRecord
from tests.signing import write_as
from tests.swarm_helpers import exp_dir, metrics, node_env, start_node, wait_all
from tests.test_scoring import payloads

TASKS = "polynomial_multiplication,spiral_matrix,paper"   # paper holds binary_matrix


@pytest.fixture(scope="module")
def attacked(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    drive, marks = str(root / "drive"), root / "marks"
    marks.mkdir()
    env = node_env(drive, tiny_llama, str(root / "home"), TASKS=TASKS, MAX_ROUNDS=2,
                   EVAL_INTERVAL=0, EVAL_QUESTIONS=24, NUM_TRANSPLANT_TREES=4,
                   MAX_NEW_TOKENS=160)         # the payloads fit: the cut is not what stops them
    source = ReasoningGymSource(parse_tasks(TASKS), seed=42, curriculum=True)
    source.eval_set(24, EVAL_SEED)                      # the workers refuse held-out questions
    layout, store = Layout("exp"), FolderStore(drive)
    # a member of the swarm: its key registered (rgym_exp/trust.py), its files signed
    write_as(store, "evil", layout.peer("evil"), PeerRecord("evil", "worker", "s", 1, "running"))
    for r in range(2):
        groups = []
        for k, task in enumerate(t.name for t in source.tasks):
            one = ReasoningGymSource([TaskSpec(task)], seed=42, curriculum=True)
            q = next(q for q in one.draw("evil", r, 10) if q.text not in source.held_out)
            right = [f"<answer>{q.answer}</answer>"] if q.answer is not None else []
            texts = payloads(str(marks / f"{task}-{r}")) + right
            groups.append(RolloutGroup("evil", r, "m", q.text, q.source, texts, [1.0] * len(texts)))
        write_as(store, "evil", layout.rollout(r, "evil", None, len(groups)),
                 encode_rollouts(groups, "evil", r))
    procs = [start_node(env, str(root / f"{n}.log"), role, n)
             for role, n in (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))]
    codes = wait_all(procs, timeout=300)
    logs = {n: open(root / f"{n}.log").read() for n in ("coord", "w1", "w2")}
    return drive, marks, codes, logs


def test_no_command_of_a_hostile_peer_s_completions_runs_on_any_worker(attacked):
    drive, marks, codes, logs = attacked
    assert codes == [0, 0, 0], {n: log[-3000:] for n, log in logs.items()}
    assert os.listdir(marks) == []


def test_the_hostile_groups_were_read_re_scored_and_those_with_a_right_answer_trained_on(attacked):
    drive = attacked[0]
    for node in ("w1", "w2"):
        lines = metrics(drive, node)
        assert sum(m["external/considered"] for m in lines) >= 4
        used = []
        for r in range(2):
            with open(os.path.join(exp_dir(drive), "submissions", f"round_{r}", f"{node}.json")) as fh:
                used += [g["node"] for g in json.load(fh)["external"]]
        assert "evil" in used                   # scored to the end: the gold answer was paid
        assert sum(m["scoring/refused"] for m in lines) > 0
