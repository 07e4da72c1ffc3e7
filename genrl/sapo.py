"""SAPO batch selection: I local groups plus up to J groups from the swarm.

External groups are untrusted. Each is re-scored here with the receiver's own
verifier against the receiver's own ground truth, regenerated from the group's
task metadata; a group whose question text does not match its metadata is
rejected. Groups whose G rewards are all equal carry no advantage and are
dropped; J are then sampled uniformly (seeded). With fewer than J usable, all
of them are used and the count is reported. J = 0 is plain GRPO.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from genrl.data import InvalidSource, Question
from genrl.rollouts import RolloutGroup


@dataclass
class ScoredGroup:
    """A group ready for training: rewards are this node's own."""
    question: Question
    completions: list[str]
    rewards: list[float]
    ended: list[bool]
    origin: str                                     # node id that generated it
    round: int
    token_ids: Optional[list[list[int]]] = None     # sampled ids (local groups only)

    @property
    def has_signal(self) -> bool:
        return has_signal(self.rewards)


def has_signal(rewards: list[float]) -> bool:
    """False when all rewards are equal: GRPO's advantage is then zero."""
    return len(rewards) > 1 and max(rewards) - min(rewards) > 1e-9


@dataclass
class ExternalPick:
    groups: list[ScoredGroup]                        # the J (or fewer) chosen
    considered: int = 0                              # groups offered for selection
    usable: int = 0                                  # passed checks and have signal
    zero_advantage: int = 0                          # dropped: all rewards equal
    rejected: Counter = field(default_factory=Counter)  # reason -> count


RewardFn = Callable[[str, Question], float]


def rescore(group: RolloutGroup, source, reward_fn: RewardFn) -> ScoredGroup:
    """Re-score a peer's group with the local verifier; InvalidSource if its
    metadata does not describe the question it carries."""
    question = source.regenerate(group.source)
    if question.text != group.question:
        raise InvalidSource("question text does not match its metadata")
    rewards = [reward_fn(text, question) for text in group.completions]
    return ScoredGroup(question=question, completions=list(group.completions), rewards=rewards,
                       ended=list(group.ended), origin=group.node_id, round=group.round)


def select_external(candidates: list[RolloutGroup], num_external: int, source,
                    reward_fn: RewardFn, rng: np.random.Generator,
                    exclude_node: Optional[str] = None) -> ExternalPick:
    """Choose up to ``num_external`` groups uniformly from the usable candidates."""
    pick = ExternalPick(groups=[])
    if num_external <= 0:
        return pick
    usable, seen = [], set()
    for group in candidates:
        key = (group.node_id, group.round, json.dumps(group.source, sort_keys=True))
        if group.node_id == exclude_node or key in seen:
            continue
        seen.add(key)
        pick.considered += 1
        try:
            scored = rescore(group, source, reward_fn)
        except InvalidSource as exc:
            pick.rejected[str(exc)] += 1
            continue
        if not scored.has_signal:
            pick.zero_advantage += 1
            continue
        usable.append(scored)
    pick.usable = len(usable)
    if usable:
        chosen = rng.choice(len(usable), size=min(num_external, len(usable)), replace=False)
        pick.groups = [usable[int(i)] for i in sorted(chosen)]
    return pick
