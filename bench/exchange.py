"""Does SAPO's exchange fill J with fresh, useful groups, at a cost flat in the swarm's size?

    python bench/exchange.py            # N = 4, 8, 64 nodes, 30 rounds, several peer waits
    python bench/exchange.py --quick    # 10 rounds (under a minute)

The real publishing, gathering and selection code (rgym_exp/exchange.py,
genrl/sapo.py, the real reward rule and reasoning-gym verifier) on a simulated
swarm, no models: N nodes, I = J = 4, G = 8, a quarter of the groups with reward
signal (some right, some wrong), the rest all wrong. Time is simulated: each node
generates for 60 s x its speed (0.75-1.35, fixed per node) x 0.9-1.1, publishes,
and its file becomes visible to the others after a Drive-like lag of 2-30 s. Each
node then gathers, waiting up to ``wait`` (a fraction of its own generation time)
for peers' current-round files, falling back one round (MAX_STALENESS=1). One
node echoes: it republishes groups other nodes published the round before. The
round closes when every node has trained (QUORUM=1).

Per N and wait: the fill rate (external groups used / min(J, usable groups that
exist, visible by the end of the node's gather in the rounds it may read and not
used by it before)), groups used twice by
one node, files read and listings per worker per round, the mean age in rounds of
the groups used, seconds spent waiting for peers, and the round's length against
no waiting at all.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402
from genrl.rollouts import RolloutGroup  # noqa: E402
from genrl.sapo import ExternalSelector, group_key  # noqa: E402
from rgym_exp.drive.layout import Layout  # noqa: E402
from rgym_exp.drive.store import Entry  # noqa: E402
from rgym_exp.exchange import RolloutExchange  # noqa: E402

I = J = 4
G = 8
SIGNAL = 0.25
GEN_S, TRAIN_S = 60.0, 20.0
LAG_S = (2.0, 30.0)
TASKS = "chain_sum{min_terms=2;max_terms=3;min_digits=1;max_digits=2}"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SimStore:
    """An in-memory folder whose files show up in listings only after their lag; it
    counts the operations of whoever uses it."""

    def __init__(self, clock: Clock):
        self.clock, self.files, self.ops = clock, {}, Counter()
        self.description = "simulated Drive"

    def put(self, path: str, data: bytes, visible_at: float) -> None:
        self.files[path] = (data, visible_at)

    def write(self, path: str, data: bytes) -> None:     # the exchange's publish
        self.put(path, data, self.clock.t + self.lag)

    def list(self, folder: str) -> list[Entry]:
        self.ops["list"] += 1
        prefix = folder.rstrip("/") + "/"
        return [Entry(p[len(prefix):], len(d)) for p, (d, at) in sorted(self.files.items())
                if p.startswith(prefix) and "/" not in p[len(prefix):] and at <= self.clock.t]

    def read(self, path: str, max_bytes: int):
        self.ops["read"] += 1
        data, at = self.files.get(path, (None, 0.0))
        return data if at <= self.clock.t else None


class SimWaiter:
    def __init__(self, clock: Clock):
        self.clock = clock

    def pause(self, seconds: float) -> None:
        self.clock.t += seconds


@dataclass
class Experiment:
    store: SimStore
    layout: Layout


def make_groups(source, rule, node: str, r: int, rng) -> list[RolloutGroup]:
    groups = []
    for q in source.draw(node, r, I):
        right = int(rng.integers(1, G)) if rng.random() < SIGNAL else 0
        texts = [f"<answer>{q.answer}</answer>"] * right + [
            f"<answer>{int(q.answer) + int(rng.integers(1, 9))}</answer>" for _ in range(G - right)]
        groups.append(RolloutGroup(node, r, "sim", q.text, q.source, texts,
                                   rule.rewards(q, texts)))
    return groups


def simulate(n_nodes: int, rounds: int, wait: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    clock = Clock()
    store = SimStore(clock)
    exp = Experiment(store, Layout("sim"))
    source = ReasoningGymSource(parse_tasks(TASKS), seed=1)
    rule = Scorer()
    nodes = [f"n{k}" for k in range(n_nodes)]
    speed = dict(zip(nodes, rng.uniform(0.75, 1.35, n_nodes)))
    exchanges = {n: RolloutExchange(exp, n, clock=clock) for n in nodes}
    selectors = {n: ExternalSelector(source, rule, n) for n in nodes}
    echo = nodes[-1] if n_nodes >= 8 else None
    published: dict[int, list[RolloutGroup]] = {}
    visible: dict[tuple, float] = {}
    stats = Counter()
    ages, waits, round_len = [], [], []
    used_by = {n: set() for n in nodes}
    start = 0.0
    for r in range(rounds):
        gen_end = {}
        published[r] = []
        for n in nodes:
            gen = GEN_S * speed[n] * rng.uniform(0.9, 1.1)
            gen_end[n] = start + gen
            if n == echo and r > 0:      # republishes others' groups of the round before
                pool = [g for g in published[r - 1] if g.node_id != n]
                picks = [pool[int(i)] for i in rng.choice(len(pool), I, replace=False)]
                groups = [RolloutGroup(n, r, g.model, g.question, g.source, g.completions,
                                       g.rewards) for g in picks]
            else:
                groups = make_groups(source, rule, n, r, rng)
            published[r] += groups
            clock.t = gen_end[n]
            store.lag = rng.uniform(*LAG_S)
            visible[(n, r)] = clock.t + store.lag
            exchanges[n].publish(r, groups)
        finish = []
        for k, n in enumerate(nodes):
            clock.t = gen_end[n]
            store.ops.clear()
            got = exchanges[n].gather(r, J, selectors[n], np.random.default_rng([seed, r, k]),
                                      SimWaiter(clock), wait_s=wait * (gen_end[n] - start),
                                      max_staleness=1, poll_s=5.0)
            # usable groups it could have had: visible by the end of its gather, not used before
            window = [g for rr in (r - 1, r) for g in published.get(rr, [])
                      if g.node_id != n and visible[(g.node_id, rr)] <= clock.t
                      and max(g.rewards) > min(g.rewards)
                      and group_key(g.source, g.completions) not in used_by[n]]
            exist = len({group_key(g.source, g.completions) for g in window})
            selectors[n].forget_before(r - 1)
            keys = [g.key for g in got.groups]
            stats["reused"] += sum(k in used_by[n] for k in keys)
            used_by[n].update(keys)
            stats["used"] += len(got.groups)
            stats["possible"] += min(J, exist)
            stats["reads"] += store.ops["read"]
            stats["listings"] += store.ops["list"]
            stats["gathers"] += 1
            stats["current"] += sum(g.round == r for g in got.groups)
            ages += got.ages(r)
            waits.append(got.waited_s)
            finish.append(clock.t + TRAIN_S * speed[n])
        round_len.append(max(finish) - start)
        start = max(finish)
    return {"fill": stats["used"] / max(1, stats["possible"]), "reused": stats["reused"],
            "reads": stats["reads"] / stats["gathers"], "lists": stats["listings"] / stats["gathers"],
            "age": float(np.mean(ages)) if ages else 0.0,
            "current": stats["current"] / max(1, stats["used"]),
            "wait": float(np.mean(waits)), "round": float(np.mean(round_len))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 rounds, two waits")
    parser.add_argument("--wait", type=float, default=0.5,
                        help="the wait used for the last line (fraction of generation time)")
    args = parser.parse_args()
    rounds = 10 if args.quick else 30
    waits = sorted({0.0, args.wait} if args.quick else {0.0, 0.1, 0.25, 0.5, 1.0, args.wait})
    t0 = time.perf_counter()
    print(f"I=J={I}, G={G}, {SIGNAL:.0%} of groups with signal, generation {GEN_S:.0f}s x node "
          f"speed, Drive lag {LAG_S[0]:.0f}-{LAG_S[1]:.0f}s, {rounds} rounds")
    print("| nodes | wait (x gen) | J filled | reused | reads/round | listings/round | "
          "age (rounds) | from current round | waited s | round s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    last = {}
    for n in (4, 8, 64):
        base = None
        for wait in waits:
            s = simulate(n, rounds, wait)
            base = base or s["round"]
            print(f"| {n} | {wait:g} | {s['fill']:.1%} | {s['reused']} | {s['reads']:.2f} | "
                  f"{s['lists']:.1f} | {s['age']:.2f} | {s['current']:.0%} | {s['wait']:.1f} | "
                  f"{s['round']:.0f} ({s['round'] / base:.2f}x) |", flush=True)
            if wait == args.wait:
                last[n] = s
    print(f"({time.perf_counter() - t0:.0f}s)")
    s = last[64]
    print(f"exchange: J filled {s['fill']:.0%}, reused {s['reused']}, reads per round "
          f"{s['reads']:.1f} (N=64; N=4: {last[4]['reads']:.1f})")


if __name__ == "__main__":
    main()
