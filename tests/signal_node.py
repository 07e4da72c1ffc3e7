"""The real launcher with a reward a random tiny model earns, so that its groups have signal.

``python -m tests.signal_node`` runs ``rgym_exp.runner.swarm_launcher.main`` after replacing
the reward rule's score with a test-only one: 1.0 for a completion of an even number of
characters, else 0.0. A random tiny model never answers an arithmetic question right, so
with the real reward no group has signal and no node ever trains on a peer's group; with
this one about half the completions score, peers' groups are usable, and what depends on
sharing (credit for the groups others used: rgym_exp/credit.py) has something to count.
Every node of such a swarm must run this module: a peer re-scores each group it reads,
with its own rule. Held-out evaluation (a verifier's ``correct``) stays the real one.
"""

from __future__ import annotations

import sys


def main() -> int:
    from genrl.rewards import RewardRule
    RewardRule.reward = lambda self, score, text: float(len(text) % 2 == 0)
    from rgym_exp.runner.swarm_launcher import main as launch
    return launch([])


if __name__ == "__main__":
    sys.exit(main())
