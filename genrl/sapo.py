"""SAPO batch selection: what a node may train on from its peers.

Each round a node trains on its I local groups plus up to J external groups.
External groups are untrusted. ``ExternalSelector`` judges them one at a time:
it regenerates the question from the group's task metadata and rejects a group
whose text does not match or whose question is held out for evaluation, skips the
node's own groups, duplicates and any group it has trained on before (by content,
so an echo of an old group is caught too), cuts every completion to the tokens this
node would train on (``cut``: at most MAX_NEW_TOKENS of its own tokenizer's), re-scores
what is left through the node's Scorer (genrl/scoring.py), and keeps the group only if
its rewards differ (a group whose G rewards are equal has no GRPO advantage). What is
scored is exactly what is trained: a peer's text past the cut can earn nothing. The exchange (rgym_exp/exchange.py) feeds it groups as it reads
peers' files and stops at J; ``select_external`` does the same for a pool
already in memory, sampling J uniformly from the usable groups. J = 0 is plain
GRPO.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from genrl.data import InvalidSource, Question
from genrl.rollouts import RolloutGroup
from genrl.scoring import Scorer


@dataclass
class ScoredGroup:
    """A group ready for training: rewards are this node's own."""
    question: Question
    completions: list[str]
    rewards: list[float]
    ended: list[bool]
    origin: str                                     # node id that generated it
    round: int
    token_ids: Optional[list[list[int]]] = None     # the ids trained on (sampled, or cut)
    prompt: str = ""                                # this node's prompt (local groups)
    correct: list[bool] = field(default_factory=list)   # fully correct, per completion
    key: str = ""                                   # identity of the group as it was sent

    def __post_init__(self):
        if not self.key:
            self.key = group_key(self.question.source, self.completions)

    @property
    def has_signal(self) -> bool:
        return has_signal(self.rewards)


def has_signal(rewards: list[float]) -> bool:
    """False when all rewards are equal: GRPO's advantage is then zero."""
    return len(rewards) > 1 and max(rewards) - min(rewards) > 1e-9


def group_key(source: dict, completions: list[str]) -> str:
    """A group's identity by content: the same question and completions, whoever sends it."""
    blob = json.dumps([source, completions], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:24]


# a peer's completion as this node trains on it: (text the kept tokens decode to, ids, ended)
Cut = Callable[[str, bool], tuple[str, Optional[list[int]], bool]]


def rescore(group: RolloutGroup, source, scorer: Scorer, cut: Optional[Cut] = None) -> ScoredGroup:
    """Re-score a peer's group with the local verifier, on what this node would train on;
    InvalidSource if its metadata does not describe the question it carries."""
    question = source.regenerate(group.source)
    if question.text != group.question:
        raise InvalidSource("question text does not match its metadata")
    texts, ids, ended = list(group.completions), None, list(group.ended)
    if cut is not None:
        kept = [cut(text, end) for text, end in zip(texts, ended)]
        texts, ids, ended = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
    verdicts = scorer.score(question, texts)
    return ScoredGroup(question=question, completions=texts, rewards=[v.reward for v in verdicts],
                       ended=ended, origin=group.node_id, round=group.round, token_ids=ids,
                       correct=[v.correct for v in verdicts],
                       key=group_key(group.source, group.completions))


@dataclass
class ExternalSelector:
    """Judges peer groups for one node; remembers what the node trained on."""
    source: object
    scorer: Scorer
    own_node: str = ""
    cut: Optional[Cut] = None                         # set once the node's tokenizer is loaded
    used: dict = field(default_factory=dict)          # group key -> round it was generated in
    considered: int = 0
    zero_advantage: int = 0
    used_before: int = 0
    rejected: Counter = field(default_factory=Counter)
    on_scored: Optional[Callable[["ScoredGroup"], None]] = None   # sees every re-scored group
    _seen: set = field(default_factory=set)

    def start_round(self) -> None:
        """Forget this round's counters and duplicates (not what was trained on)."""
        self.considered = self.zero_advantage = self.used_before = 0
        self.rejected = Counter()
        self._seen = set()

    def consider(self, group: RolloutGroup) -> Optional[ScoredGroup]:
        """The group re-scored, if this node may train on it; else None (counted)."""
        if group.node_id == self.own_node:
            return None
        key = group_key(group.source, group.completions)
        if key in self._seen:
            return None
        self._seen.add(key)
        self.considered += 1
        if key in self.used:
            self.used_before += 1
            return None
        try:
            scored = rescore(group, self.source, self.scorer, self.cut)
        except InvalidSource as exc:
            self.rejected[str(exc)] += 1
            return None
        if self.on_scored is not None:     # with or without signal: where the swarm finds it
            self.on_scored(scored)
        if not scored.has_signal:
            self.zero_advantage += 1
            return None
        return scored

    def mark_used(self, groups: Iterable[ScoredGroup]) -> None:
        for g in groups:
            self.used[g.key] = g.round

    def forget_before(self, round_: int) -> None:
        """Drop keys of groups older than any round the exchange still reads."""
        self.used = {k: r for k, r in self.used.items() if r >= round_}


@dataclass
class ExternalPick:
    groups: list[ScoredGroup]                        # the J (or fewer) chosen
    considered: int = 0                              # groups offered for selection
    usable: int = 0                                  # passed checks and have signal
    zero_advantage: int = 0                          # dropped: all rewards equal
    rejected: Counter = field(default_factory=Counter)  # reason -> count


def select_external(candidates: list[RolloutGroup], num_external: int, source,
                    scorer: Scorer, rng: np.random.Generator,
                    exclude_node: Optional[str] = None,
                    selector: Optional[ExternalSelector] = None) -> ExternalPick:
    """Choose up to ``num_external`` groups uniformly from the usable candidates of a
    pool already in memory (the exchange reads and judges lazily instead)."""
    pick = ExternalPick(groups=[])
    if num_external <= 0:
        return pick
    judge = selector or ExternalSelector(source, scorer, exclude_node or "")
    judge.start_round()
    usable = [g for g in (judge.consider(c) for c in candidates) if g is not None]
    pick.considered, pick.zero_advantage = judge.considered, judge.zero_advantage
    pick.rejected = judge.rejected
    pick.usable = len(usable)
    if usable:
        chosen = rng.choice(len(usable), size=min(num_external, len(usable)), replace=False)
        pick.groups = [usable[int(i)] for i in sorted(chosen)]
    judge.mark_used(pick.groups)
    return pick
