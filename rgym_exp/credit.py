"""Credit for what a node shared: whose groups the swarm trained on, from the folder alone.

Every submission lists the peer groups its node trained on (``external``: node, round, key,
reward_mean). Counted by origin, they say for each node how many of the groups it shared
the others used, how many nodes used them, and those groups' mean reward: its part in
SAPO's exchange, set beside its own reward and held-out accuracy (a leaderboard).

Two ways to count, one answer:

* ``read_credit`` (the report) recounts every submission: the live round folders and the
  rounds the coordinator retired (one read per submission, one per retired round).
* ``from_peers`` (status) adds up the running tallies each worker keeps in its own peer
  record (``used_from``: origin -> [groups, sum of their mean rewards]; ``Tally``), which
  status reads anyway: no extra request. A restarted worker takes its tally back with
  its NODE_ID (rgym_exp/heartbeat.py).

Everything here is untrusted input (DESIGN invariant 7). Only signed claims reach it
(submissions and peer records are verified as they are read: rgym_exp/trust.py), and
even a signed claim is bounded: names, counts and rewards are checked, a submission
counts at most MAX_J groups, a tally at most MAX_J per round its node has reached, a
group's mean reward is at most MAX_GROUP_REWARD in size; an entry that fails is skipped. No
torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from rgym_exp.drive.layout import NAME_RE, Layout
from rgym_exp.drive.store import Store
from rgym_exp.readers import every_round

MAX_ORIGINS = 4096        # entries of one tally read from a record
MAX_J = 256               # NUM_TRANSPLANT_TREES' largest value: groups used per round, at most
MAX_GROUP_REWARD = 11.0   # a correct answer (1) plus FORMAT_REWARD_WEIGHT's largest value (10)


@dataclass
class Credit:
    node: str
    used_by_others: int = 0             # groups of this node that other nodes trained on
    reward_sum: float = 0.0             # sum of those groups' mean rewards
    users: set = field(default_factory=set)  # nodes that trained on them (report only)
    used_from_others: int = 0           # groups of other nodes this node trained on

    @property
    def reward_mean(self) -> Optional[float]:
        return self.reward_sum / self.used_by_others if self.used_by_others else None


def _reward(value) -> Optional[float]:
    ok = type(value) in (int, float) and math.isfinite(value) and abs(value) <= MAX_GROUP_REWARD
    return float(value) if ok else None


def _add(credit: dict, origin: str, user: str, groups: int, reward_sum: float) -> None:
    if origin == user or not NAME_RE.fullmatch(origin):
        return
    mine = credit.setdefault(origin, Credit(origin))
    mine.used_by_others += groups
    mine.reward_sum += reward_sum
    mine.users.add(user)
    credit.setdefault(user, Credit(user)).used_from_others += groups


def count_submissions(submissions) -> dict[str, Credit]:
    """Credit from submissions (Submission records of any rounds)."""
    credit: dict[str, Credit] = {}
    for sub in submissions:
        credit.setdefault(sub.node_id, Credit(sub.node_id))
        for item in sub.external[:MAX_J] if isinstance(sub.external, list) else ():
            if not isinstance(item, dict) or not isinstance(item.get("node"), str):
                continue
            reward = _reward(item.get("reward_mean"))
            if reward is not None:
                _add(credit, item["node"], sub.node_id, 1, reward)
    return credit


def read_credit(store: Store, layout: Layout) -> dict[str, Credit]:
    """Every submission of the experiment counted (live rounds and retired ones)."""
    return count_submissions([sub for _, found in every_round(store, layout)
                              for sub in found.values()])


class Tally:
    """A worker's running count of the peer groups it trained on, by origin (kept in its
    peer record as ``used_from``)."""

    def __init__(self, start: Optional[dict] = None):
        self.used_from = {origin: list(v) for origin, v in _checked(start or {})}

    def add(self, external: list[dict]) -> dict:
        """Count one round's external groups; returns the tally to store."""
        for item in external:
            entry = self.used_from.setdefault(item["node"], [0, 0.0])
            entry[0] += 1
            entry[1] = round(entry[1] + float(item["reward_mean"]), 6)
        return {k: list(v) for k, v in self.used_from.items()}


def _checked(tally, rounds: Optional[int] = None) -> list:
    """The valid (origin, [groups, reward_sum]) entries of an untrusted tally, of a node that
    has done at most ``rounds`` rounds (None: any number)."""
    out, most = [], MAX_J * rounds if rounds is not None else math.inf
    for origin, value in list(tally.items())[:MAX_ORIGINS] if isinstance(tally, dict) else ():
        if (isinstance(origin, str) and NAME_RE.fullmatch(origin) and isinstance(value, list)
                and len(value) == 2 and type(value[0]) is int and 0 <= value[0] <= most
                and type(value[1]) in (int, float) and math.isfinite(value[1])
                and abs(value[1]) <= MAX_GROUP_REWARD * value[0]):
            out.append((origin, [value[0], float(value[1])]))
    return out


def from_peers(records: dict) -> dict[str, Credit]:
    """Credit from the workers' peer records (node id -> PeerRecord with ``used_from``): at
    most MAX_J groups per round each record's node has reached."""
    credit: dict[str, Credit] = {}
    for user, record in records.items():
        rounds = max(getattr(record, "round", 0), 0) + 2   # the round it is in, and one ahead
        for origin, (groups, reward_sum) in _checked(getattr(record, "used_from", None), rounds):
            _add(credit, origin, user, groups, reward_sum)
    return credit


# --- the table ------------------------------------------------------------------------------

def leaderboard(credit: dict[str, Credit], series: dict) -> list[dict]:
    """One row per node (workers with a series or any credit), most groups used first: credit
    beside the node's own mean reward and latest held-out accuracy (rgym_exp/series.py)."""
    rows = []
    for node in sorted(set(credit) | set(series)):
        c, s = credit.get(node, Credit(node)), series.get(node)
        rows.append({"node": node, "used_by_others": c.used_by_others, "users": len(c.users),
                     "used_reward": c.reward_mean, "used_from_others": c.used_from_others,
                     "own_reward": sum(s.rewards) / len(s.rewards) if s and s.rewards else None,
                     "rounds": len(s.rounds) if s else 0,
                     "eval": s.eval_accuracy[-1] if s and s.eval_accuracy else None})
    return sorted(rows, key=lambda r: (-r["used_by_others"], r["node"]))


def markdown_table(rows: list[dict]) -> str:
    def num(v, digits=3):
        return "-" if v is None else f"{v:.{digits}f}"
    lines = ["| node | its groups others trained on | by nodes | their mean reward | groups it "
             "used from others | rounds | own mean reward | held-out accuracy (latest) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['node']} | {r['used_by_others']} | {r['users']} | "
                     f"{num(r['used_reward'])} | {r['used_from_others']} | {r['rounds']} | "
                     f"{num(r['own_reward'])} | {num(r['eval'])} |")
    return "\n".join(lines)
