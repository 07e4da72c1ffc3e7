"""A difficulty curriculum: each node keeps every task at a level where its groups have signal.

GRPO learns only from groups whose completions disagree: at a success rate p among
G samples a group has signal with probability 1 - p^G - (1-p)^G, which is small at
both ends (a 135M model earns almost nothing on reasoning-gym's default difficulty).
reasoning-gym defines, for each task, levels of its difficulty attributes
(``create_curriculum``: number of terms, digits, grid size...). A node starts every
task at level 0 and counts, per task, how many of its own completions are correct
since the task's last change; once it has ``window`` of them it moves the task up a
level when the success rate is above the band, down when below, and starts counting
again. The level is part of each question's metadata, so a peer regenerates the exact
question and answer (genrl/data.py).

It also chooses which task each local question comes from, where the model has signal. A
small model earns reward on few tasks (SmolLM2-135M on the paper's nine at level 0: two of
them, right 8-9% of the time; bench/curriculum.py), so drawing tasks by their fixed weights
spends most groups where every completion is wrong and nothing is learnt. Per task and level,
the node counts its groups and those with signal, and the peers' groups it re-scores while
gathering at the same level (``observe``: the swarm's experience). Each question's task is
drawn with probability proportional to a draw from each task's Beta posterior of its share of
groups with signal (prior ``PRIOR``: mostly near 0, with a tail that gets an untried task
tried), times the task's weight in TASKS: tasks that pay alike keep TASKS' mix, one that
never pays is drawn rarely. A share ``EXPLORE`` of questions follows TASKS' weights alone, so
a task is looked at again as the model changes. Online difficulty filtering (as in
INTELLECT-3) at the level of tasks. Simulated on the measured pool (tests/test_curriculum.py):
25% of the first five rounds' groups with signal instead of 12%. The draw is proportional,
not the argmax of Thompson sampling: that found a paying task as fast but never let a second
task that started to pay take its share.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np

BAND = (0.15, 0.75)   # success rates that keep groups informative: bench/curriculum.py
WINDOW = 32           # completions per task between two decisions (4 groups of 8)
PRIOR = (0.05, 1.0)   # Beta prior of a task's share of groups with signal (chosen by simulation)
EXPLORE = 0.1         # share of questions drawn by TASKS' weights alone


@functools.lru_cache(maxsize=None)
def _curriculum(name: str):
    from reasoning_gym.factory import CURRICULA, create_curriculum
    return create_curriculum(name) if name in CURRICULA else None


def has_curriculum(name: str) -> bool:
    return _curriculum(name) is not None


def max_level(name: str) -> int:
    """The highest level of a task's curriculum (0 for a task without one)."""
    cur = _curriculum(name)
    if cur is None or not cur.attributes:
        return 0
    return max(len(attr.levels) for attr in cur.attributes.values()) - 1


@functools.lru_cache(maxsize=1024)
def _level_settings(name: str, level: int) -> str:
    cur = _curriculum(name)
    cur.set_global_level(level)
    config = cur.generate_configuration()
    fields = []
    for attr in cur.attributes.values():
        fields += [attr.lower_field_name, attr.upper_field_name] if hasattr(
            attr, "lower_field_name") else [attr.field_name]
    values = {f: getattr(config, f) for f in fields}
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
                      sort_keys=True)


def settings_at(name: str, level: int, base: dict) -> dict:
    """The task settings at ``level``: the curriculum's difficulty fields over ``base``
    (a user's other settings stay). ValueError for a level the task does not have."""
    if type(level) is not int or not 0 <= level <= max_level(name):
        raise ValueError(f"task {name} has no curriculum level {level!r} (0..{max_level(name)})")
    if _curriculum(name) is None:
        return dict(base)
    return {**base, **json.loads(_level_settings(name, level))}


@dataclass
class Curriculum:
    """Per-task levels of one node, and what it has seen at them."""
    tasks: list[str]
    band: tuple = BAND
    window: int = WINDOW
    levels: dict = field(default_factory=dict)     # task -> level
    top: dict = field(default_factory=dict)        # task -> highest level allowed
    seen: dict = field(default_factory=dict)       # task -> [correct, total] since last change
    groups: dict = field(default_factory=dict)     # task -> [with signal, groups] at this level

    def __post_init__(self):
        for name in self.tasks:
            self.levels.setdefault(name, 0)
            self.top.setdefault(name, max_level(name))
            self.seen.setdefault(name, [0, 0])
            self.groups.setdefault(name, [0, 0])

    def level(self, name: str) -> int:
        return self.levels.get(name, 0)

    def cap(self, name: str, level: int) -> None:
        """Never go above ``level`` for this task (its questions there are unusable)."""
        self.top[name] = max(0, min(self.top.get(name, level), level))
        self.levels[name] = min(self.levels.get(name, 0), self.top[name])

    def record(self, name: str, correct: int, total: int, signal: bool = False) -> None:
        """One group of ``total`` completions, ``correct`` of them right; ``signal``: its
        rewards differ (GRPO learns from it)."""
        counts = self.seen.setdefault(name, [0, 0])
        counts[0] += correct
        counts[1] += total
        self._count_group(name, signal)

    def observe(self, name: str, level, signal: bool) -> None:
        """A peer's group, re-scored here: counts toward the task's share of groups with
        signal if it was drawn at this node's current level of the task."""
        if name in self.groups and level == self.levels.get(name):
            self._count_group(name, signal)

    def _count_group(self, name: str, signal: bool) -> None:
        groups = self.groups.setdefault(name, [0, 0])
        groups[0] += bool(signal)
        groups[1] += 1

    def pick(self, rng, count: int, weights) -> list[int]:
        """Indices into ``tasks`` for ``count`` questions (weights: TASKS' weights in that
        order), in proportion to a posterior draw of each task's share of groups with signal."""
        weights = np.asarray(weights, dtype=float)
        base = weights / weights.sum()
        hits = np.array([self.groups.get(t, [0, 0])[0] for t in self.tasks], dtype=float)
        seen = np.array([self.groups.get(t, [0, 0])[1] for t in self.tasks], dtype=float)
        out = []
        for _ in range(count):
            if rng.random() < EXPLORE:
                out.append(int(rng.choice(len(self.tasks), p=base)))
            else:
                draw = rng.beta(hits + PRIOR[0], seen - hits + PRIOR[1]) * base
                out.append(int(rng.choice(len(self.tasks), p=draw / draw.sum())))
        return out

    def update(self) -> dict:
        """Apply the band to every task with a full window; returns {task: (old, new, rate)}
        for the tasks that moved."""
        moved = {}
        lo, hi = self.band
        for name, (correct, total) in self.seen.items():
            if total < self.window:
                continue
            rate, old = correct / total, self.levels.get(name, 0)
            new = old + 1 if rate > hi else old - 1 if rate < lo else old
            new = max(0, min(new, self.top.get(name, max_level(name))))
            self.seen[name] = [0, 0]
            if new != old:
                self.levels[name] = new
                self.groups[name] = [0, 0]      # a new difficulty: what it yields is unknown
                moved[name] = (old, new, rate)
        return moved

    def state(self) -> dict:
        return {"levels": dict(self.levels), "top": dict(self.top),
                "seen": {k: list(v) for k, v in self.seen.items()},
                "groups": {k: list(v) for k, v in self.groups.items()}}

    def restore(self, state: dict) -> None:
        """Take back a saved state (a checkpoint's); unknown tasks and bad values ignored."""
        for key, target in (("levels", self.levels), ("top", self.top)):
            for name, value in (state.get(key) or {}).items():
                if name in self.levels and type(value) is int and 0 <= value <= max_level(name):
                    target[name] = value
        for key, target in (("seen", self.seen), ("groups", self.groups)):
            for name, value in (state.get(key) or {}).items():
                if name in target and isinstance(value, list) and len(value) == 2 \
                        and all(type(v) is int and v >= 0 for v in value) and value[0] <= value[1]:
                    target[name] = list(value)
        for name in self.levels:
            self.levels[name] = min(self.levels[name], self.top[name])
