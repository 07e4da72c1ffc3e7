"""What a reader refused, counted by the node each file claimed to be from and why, and
said once per round (rgym_exp/trust.py refuses; this keeps the tally it shows in log
lines, peer records and ``status``)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Optional

MAX_SIGNERS = 256                   # names kept in the counts (others: "(others)")


class Refusals:
    """Counts of refused files: since the start (``refused``) and since the last
    ``round_line``."""

    def __init__(self):
        self._lock = threading.RLock()
        self.refused: Counter = Counter()     # (signer, reason) -> files, since the start
        self._since: Counter = Counter()      # ... since the last round_line

    def count(self, signer: str, reason: str) -> None:
        """Count one refused file (``open`` counts its own; callers, what they refuse)."""
        with self._lock:
            if len({s for s, _ in self.refused}) >= MAX_SIGNERS and not any(
                    s == signer for s, _ in self.refused):
                signer = "(others)"
            self.refused[(signer, reason)] += 1
            self._since[(signer, reason)] += 1

    def refused_by_signer(self, limit: int = 32) -> dict:
        """{claimed signer: {reason: files}} for a peer record: the ``limit`` signers with
        the most refused files."""
        with self._lock:
            per: dict[str, dict] = {}
            for (signer, reason), n in self.refused.items():
                per.setdefault(signer, {})[reason] = n
        top = sorted(per, key=lambda s: -sum(per[s].values()))[:limit]
        return {s: per[s] for s in sorted(top)}

    def round_line(self, what: str) -> Optional[str]:
        """One line naming the files refused since the last call (None if none were)."""
        with self._lock:
            since, self._since = self._since, Counter()
        if not since:
            return None
        by_reason: dict[str, list] = {}
        for (signer, reason), n in since.most_common():
            by_reason.setdefault(reason, []).append((signer, n))
        parts = []
        for reason, items in by_reason.items():
            names = ", ".join(s for s, _ in items[:4]) + (", ..." if len(items) > 4 else "")
            parts.append(f"{sum(n for _, n in items)} {reason} (claiming {names})")
        return (f"{what}: refused {sum(since.values())} file(s) that failed verification, "
                f"ignored: {'; '.join(parts)}")
