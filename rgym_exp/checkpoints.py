"""A worker's checkpoints on the shared folder, and falling back past bad ones.

``checkpoints/{node_id}/round_{R}/`` holds the trainer files (safetensors +
JSON, see genrl.checkpoint) and, written last, ``manifest.json`` with each
file's size and SHA-256, signed by the node (rgym_exp/trust.py), so the SHA-256s
vouch for the weights. A checkpoint without a manifest is incomplete; one whose
manifest is not the node's (unsigned, forged) is refused; one whose files do not
match it is corrupt. Restoring walks from the newest
checkpoint to older ones and says which it skipped and why. Only the last
CHECKPOINT_KEEP checkpoints are kept.

What a checkpoint holds is CHECKPOINT_MODE (genrl/checkpoint.py): by default the
weights alone, 0.54 GB for SmolLM2-135M instead of 1.62 GB with float32 AdamW
moments (``exact``), which a restart of a round every few minutes barely misses
(bench/checkpoint_restart.py). One is saved every CHECKPOINT_INTERVAL rounds and,
with CHECKPOINT_MINUTES, also when that long has passed since the last one. Drive
takes at most 750 GB of uploads per account a day; a node whose checkpoints alone
would pass that says so once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time

from genrl.checkpoint import FILES, load_trainer, save_trainer
from rgym_exp.drive.backends import url_scheme
from rgym_exp.drive.layout import parse_round_dir
from rgym_exp.drive.store import StoreError
from rgym_exp.progress import progress
from rgym_exp.trust import parse_record

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 64 * 1024
MAX_CHECKPOINT_FILE = 64 * 1024 ** 3
DRIVE_DAILY_UPLOAD = 750e9    # bytes one Google account may upload to Drive in a day


def read_manifest(trust, remote: str) -> dict:
    """The verified manifest of the checkpoint in folder ``remote``; ValueError if there is
    none or it is not usable (refused: not signed by the checkpoint's node)."""
    body = trust.read(f"{remote}/{MANIFEST}", MANIFEST_MAX_BYTES)
    if body is None:
        raise ValueError("no manifest (the save did not complete)")
    manifest = parse_record(body, MANIFEST_MAX_BYTES)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("the manifest lists no files")
    return manifest


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CheckpointManager:
    def __init__(self, experiment, node_id: str, staging_dir: str, keep: int, mode: str = "exact",
                 interval: int = 1, minutes: float = 0.0, clock=time.monotonic):
        self.exp, self.node_id, self.keep, self.mode = experiment, node_id, keep, mode
        self.interval, self.minutes, self.clock = interval, minutes, clock
        self.staging = staging_dir
        self.saved_at = clock()          # this process's start counts as a save for CHECKPOINT_MINUTES
        self._last_upload = None         # (monotonic time, bytes) of the last save
        self._warned_cap = False

    def due(self, round_: int) -> bool:
        """Whether to save after finishing ``round_``: every ``interval`` rounds, or when
        ``minutes`` (if set) have passed since the last save."""
        return (round_ + 1) % self.interval == 0 or (
            self.minutes > 0 and self.clock() - self.saved_at >= self.minutes * 60)

    def rounds(self) -> list[int]:
        """Checkpoint rounds on the folder, newest first."""
        entries = self.exp.store.list(self.exp.layout.checkpoints_dir(self.node_id))
        return sorted((r for r in (parse_round_dir(e.name) for e in entries if e.is_dir)
                       if r is not None), reverse=True)

    def save(self, trainer, round_: int, extra: dict, before_write=lambda: None) -> None:
        """Upload a checkpoint, manifest last; ``before_write()`` runs before each file
        (the worker's ownership check: a node taken over mid-save stops there)."""
        t0 = time.perf_counter()
        local = os.path.join(self.staging, f"round_{round_}")
        shutil.rmtree(local, ignore_errors=True)
        paths = save_trainer(trainer, local, round_, extra, optimizer=self.mode)
        remote = self.exp.layout.checkpoint_dir(self.node_id, round_)
        manifest = {"round": round_, "created_at": time.time(), "files": {}}
        total = sum(os.path.getsize(p) for p in paths)
        with progress(total=total, desc=f"checkpoint round {round_}", unit="B") as bar:
            for path in paths:
                name = os.path.basename(path)
                manifest["files"][name] = {"size": os.path.getsize(path), "sha256": sha256_file(path)}
                before_write()
                self.exp.store.upload(path, f"{remote}/{name}")
                bar.update(os.path.getsize(path))
        before_write()
        self.exp.trust.write(f"{remote}/{MANIFEST}", json.dumps(manifest).encode())
        shutil.rmtree(local, ignore_errors=True)
        log.info("checkpoint saved: round %d, %.1f MB (%s) in %.1fs", round_, total / 1e6,
                 self.mode, time.perf_counter() - t0)
        self._check_upload_rate(total)
        self.prune()

    def _check_upload_rate(self, size: int) -> None:
        """Warn once when checkpoints at this pace would pass Drive's daily upload cap."""
        now, last = self.clock(), self._last_upload
        self.saved_at, self._last_upload = now, (now, size)
        scheme = url_scheme(self.exp.config.GDRIVE_PATH)
        if last is None or self._warned_cap or scheme not in (None, "gdrive"):
            return
        per_day = size * 86400 / max(now - last[0], 1.0)
        if per_day > DRIVE_DAILY_UPLOAD:
            self._warned_cap = True
            log.warning("checkpoints of %.2f GB every %.0f s would upload %.0f GB a day, past "
                        "Drive's %.0f GB a day per Google account (every node of the account "
                        "counts; uploads then fail until the next day): raise "
                        "CHECKPOINT_INTERVAL or CHECKPOINT_MINUTES, or use CHECKPOINT_MODE=weights",
                        size / 1e9, now - last[0], per_day / 1e9, DRIVE_DAILY_UPLOAD / 1e9)

    def prune(self) -> None:
        for r in self.rounds()[self.keep:]:
            try:
                self.exp.store.delete(self.exp.layout.checkpoint_dir(self.node_id, r))
            except StoreError as exc:
                log.warning("old checkpoint round %d not deleted: %s", r, exc)

    def _fetch(self, round_: int) -> str:
        """Download and verify one checkpoint; returns the local folder. ValueError if bad."""
        remote = self.exp.layout.checkpoint_dir(self.node_id, round_)
        files = read_manifest(self.exp.trust, remote)["files"]
        if set(files) != set(FILES):
            raise ValueError("manifest does not list the checkpoint files")
        local = os.path.join(self.staging, f"restore_{round_}")
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        for name, meta in files.items():
            size = meta.get("size") if isinstance(meta, dict) else None
            if type(size) is not int or not 0 <= size <= MAX_CHECKPOINT_FILE:
                raise ValueError(f"manifest entry for {name} is malformed")
            path = os.path.join(local, name)
            if not self.exp.store.download(f"{remote}/{name}", path, size):
                raise ValueError(f"{name} is missing")
            if os.path.getsize(path) != size or sha256_file(path) != meta.get("sha256"):
                raise ValueError(f"{name} does not match its manifest (truncated or corrupt)")
        return local

    def restore(self, trainer) -> dict | None:
        """Load the newest usable checkpoint into ``trainer``; None if there is none."""
        touched = None
        for round_ in self.rounds():
            try:
                local = self._fetch(round_)
            except (ValueError, OSError, StoreError) as exc:
                log.warning("checkpoint of round %d is unusable (%s); falling back to an older one",
                            round_, exc)
                continue
            try:
                state = load_trainer(trainer, local)
            except (ValueError, OSError, KeyError) as exc:
                touched = f"round {round_}: {exc}"
                log.warning("checkpoint of round %d does not fit this model (%s); trying an older "
                            "one", round_, exc)
                continue
            finally:
                shutil.rmtree(local, ignore_errors=True)
            mode = state.get("optimizer", "exact")
            log.info("resumed from checkpoint of round %d (%s)", round_,
                     "weights only: the optimizer's moments start afresh" if mode == "weights"
                     else f"{mode} optimizer state")
            return state
        if touched:  # a failed load may have overwritten part of the model: do not train on it
            raise ValueError(f"no checkpoint of {self.node_id} fits this model ({touched}); was "
                             "MODEL_NAME changed? Use the original MODEL_NAME or a new NODE_ID")
        return None
