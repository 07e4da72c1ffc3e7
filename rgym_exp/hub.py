"""Pushing a worker's model to the Hugging Face Hub (HUB_REPO_ID), never at training's cost.

At start, ``check`` asks the Hub whether HUGGINGFACE_ACCESS_TOKEN may write to the
repository (``whoami``, then ``auth_check(write=True)``; a repository that does not exist
yet is created, private). Any "no" -- no token, an invalid or read-only token, someone
else's repository, offline mode, no network -- is one log line, and the node trains on
without pushing (a read-only token crashed nodes in Gensyn's rl-swarm).

A push is one commit of an exported model folder (rgym_exp/export.py) with
``upload_folder``, run in a background thread so the swarm never waits for an upload: every
HUB_PUSH_INTERVAL rounds, and at the end. A push that falls due while the previous one is
still uploading, or sooner than ``MIN_COMMIT_GAP`` after it, is left for the next one: at most
120 interval commits an hour, plus the final one, under the Hub's 128 commits per hour per
repository. The final push waits only for a push in progress. A failed push is one warning;
a 401 or 403 (the token lost its rights) ends pushing.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)

MIN_COMMIT_GAP = 30.0   # seconds between two interval commits of one node: <= 120 an hour


def _status(exc: Exception) -> Optional[int]:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _short(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


class HubPusher:
    def __init__(self, repo_id: str, token: str, interval: int, endpoint: Optional[str] = None,
                 min_gap: float = MIN_COMMIT_GAP, clock=time.monotonic):
        self.repo_id, self.token, self.interval = repo_id, token, interval
        self.endpoint, self.min_gap, self.clock = endpoint, min_gap, clock
        self.enabled = False
        self.pushed_round: Optional[int] = None   # newest round committed
        self.commits = 0
        self._last_commit = -float("inf")          # clock time of the last commit's start
        self._thread: Optional[threading.Thread] = None
        self._api = None

    # --- start ----------------------------------------------------------------------------

    def check(self) -> bool:
        """Whether this node can push; says why not in one line. Never raises."""
        why = self._why_not()
        self.enabled = why is None
        if why:
            log.warning("HUB_REPO_ID=%s: not pushing, training goes on: %s", self.repo_id, why)
        else:
            log.info("HUB_REPO_ID=%s: the token can write; pushing every %d rounds and at the end",
                     self.repo_id, self.interval)
        return self.enabled

    def _why_not(self) -> Optional[str]:
        if not self.token:
            return "HUGGINGFACE_ACCESS_TOKEN is empty (it needs a token with write access)"
        try:
            from huggingface_hub import HfApi, constants
            from huggingface_hub.errors import RepositoryNotFoundError
        except ImportError as exc:
            return f"huggingface_hub is not importable ({exc})"
        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE is set"
        self._api = HfApi(endpoint=self.endpoint, token=self.token)
        try:
            user = self._api.whoami().get("name", "?")
        except Exception as exc:  # noqa: BLE001 - any failure here means "do not push"
            code = _status(exc)
            return ("HUGGINGFACE_ACCESS_TOKEN is not a valid token (401)" if code == 401
                    else f"the Hub did not answer whoami ({_short(exc)})")
        try:
            try:
                self._api.auth_check(self.repo_id, write=True)
            except RepositoryNotFoundError:
                self._api.create_repo(self.repo_id, private=True, exist_ok=True)
                log.info("created the private model repository %s", self.repo_id)
        except Exception as exc:  # noqa: BLE001
            if _status(exc) in (401, 403):
                return (f"the token of {user} cannot write to {self.repo_id} (read-only token, or "
                        "not your namespace): make a token with write access at "
                        "huggingface.co/settings/tokens")
            return f"could not check write access ({_short(exc)})"
        return None

    # --- pushes ---------------------------------------------------------------------------

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def due(self, round_: int) -> bool:
        """Whether to push after ``round_``: the interval has come, no push is running and the
        last commit is at least ``min_gap`` old (otherwise the next due round pushes)."""
        if not self.enabled or (round_ + 1) % self.interval:
            return False
        if self.busy() or self.clock() - self._last_commit < self.min_gap:
            log.info("round %d: Hub push skipped (the previous one is %s)", round_,
                     "still uploading" if self.busy() else f"under {self.min_gap:.0f}s old")
            return False
        return True

    def push(self, folder: str, round_: int, wait: bool = False) -> None:
        """Commit ``folder`` (then delete it) in the background; ``wait``: in this thread."""
        if not self.enabled:
            shutil.rmtree(folder, ignore_errors=True)
            return
        self._last_commit = self.clock()
        self._thread = threading.Thread(target=self._upload, args=(folder, round_),
                                        name="hub-push", daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()

    def _upload(self, folder: str, round_: int) -> None:
        t0 = time.perf_counter()
        try:
            info = self._api.upload_folder(repo_id=self.repo_id, folder_path=folder,
                                           commit_message=f"round {round_}")
            self.pushed_round, self.commits = round_, self.commits + 1
            log.info("pushed the model of round %d to %s in %.0fs (%s)", round_, self.repo_id,
                     time.perf_counter() - t0, getattr(info, "oid", "")[:10])
        except Exception as exc:  # noqa: BLE001 - a push never stops training
            if _status(exc) in (401, 403):
                self.enabled = False
                log.warning("Hub push of round %d refused (%s): no more pushes", round_, _short(exc))
            else:
                log.warning("Hub push of round %d failed (%s); the next one retries", round_,
                            _short(exc))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def wait(self) -> None:
        """Wait for a push in progress to finish."""
        if self._thread is not None:
            self._thread.join()
