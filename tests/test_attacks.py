"""A hostile writer of the shared folder against a running swarm, through the real launcher
(issue 20): every attack of tests/attacks.py planted or forged while a coordinator and two
workers run, each judged by its own test from what the run left. bench/chaos.py runs the
same attacks and prints ``tried N, held M``."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.attacks import SETTINGS, VERDICTS, attacked_swarm, vanished_swarm
from tests.swarm_helpers import node_env, start_node


def launcher(tmp, model):
    """``start(role, node)`` for tests/attacks.py, and ``out(node, restarted=False)``: what
    that node's processes printed (the last one's only, with ``restarted``)."""
    env = node_env(str(tmp / "drive"), model, str(tmp / "home"), **SETTINGS)
    logs = defaultdict(list)

    def start(role, node):
        path = str(tmp / f"{node}.{len(logs[node])}.log")
        logs[node].append(path)
        return start_node(env, path, role, node, module="tests.chaos_node")

    def out(node, restarted=False):
        paths = logs[node][-1:] if restarted else logs[node]
        return "".join(open(p, errors="replace").read() for p in paths)

    return start, out


@pytest.fixture(scope="module")
def attacked(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacked")
    start, out = launcher(tmp, tiny_llama)
    run = attacked_swarm(str(tmp / "drive"), str(tmp / "outside"), start)
    return run, out


@pytest.mark.parametrize("attack", list(VERDICTS))
def test_the_swarm_holds_against(attacked, attack):
    run, out = attacked
    VERDICTS[attack](run, out)


def test_a_vanished_experiment_folder_stops_every_node_with_a_message(tiny_llama, tmp_path):
    start, out = launcher(tmp_path, tiny_llama)
    run = vanished_swarm(str(tmp_path / "drive"), start, timeout=120)
    assert all(code not in (0, None) for code in run.codes.values()), run.codes
    assert max(run.took.values()) < 60, run.took
    for node in run.codes:
        assert "experiment folder" in out(node) and "vanished" in out(node), out(node)[-2000:]
