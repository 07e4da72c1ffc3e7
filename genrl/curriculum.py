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
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

BAND = (0.15, 0.75)   # success rates that keep groups informative: bench/curriculum.py
WINDOW = 32           # completions per task between two decisions (4 groups of 8)


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

    def __post_init__(self):
        for name in self.tasks:
            self.levels.setdefault(name, 0)
            self.top.setdefault(name, max_level(name))
            self.seen.setdefault(name, [0, 0])

    def level(self, name: str) -> int:
        return self.levels.get(name, 0)

    def cap(self, name: str, level: int) -> None:
        """Never go above ``level`` for this task (its questions there are unusable)."""
        self.top[name] = max(0, min(self.top.get(name, level), level))
        self.levels[name] = min(self.levels.get(name, 0), self.top[name])

    def record(self, name: str, correct: int, total: int) -> None:
        counts = self.seen.setdefault(name, [0, 0])
        counts[0] += correct
        counts[1] += total

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
                moved[name] = (old, new, rate)
        return moved

    def state(self) -> dict:
        return {"levels": dict(self.levels), "top": dict(self.top),
                "seen": {k: list(v) for k, v in self.seen.items()}}

    def restore(self, state: dict) -> None:
        """Take back a saved state (a checkpoint's); unknown tasks and bad values ignored."""
        for key, target in (("levels", self.levels), ("top", self.top)):
            for name, value in (state.get(key) or {}).items():
                if name in self.levels and type(value) is int and 0 <= value <= max_level(name):
                    target[name] = value
        for name, value in (state.get("seen") or {}).items():
            if name in self.seen and isinstance(value, list) and len(value) == 2 \
                    and all(type(v) is int and v >= 0 for v in value):
                self.seen[name] = list(value)
        for name in self.levels:
            self.levels[name] = min(self.levels[name], self.top[name])
