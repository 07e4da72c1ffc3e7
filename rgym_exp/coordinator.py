"""The coordinator: opens, closes and retires rounds. It never loads a model
(and never imports torch).

Round R closes when a quorum of *live* workers has submitted R (live: its
heartbeat counter changed within PEER_TIMEOUT, judged on this machine's clock),
or when ROUND_TIMEOUT passes -- then the log names the late workers. A round
with no submission at all is extended rather than skipped; with no live
worker at all for WAIT_TIMEOUT the coordinator exits (code 3). With
COORDINATOR_ROUND_INTERVAL > 0 rounds instead advance on a fixed timer (the
reference fork's behaviour). After MAX_ROUNDS the state says ``finished``.

A restarted coordinator continues from the state file (the round keeps the
time it had left, measured on this machine's clock, so a restart on a machine
whose clock is off neither ends nor stretches the round); restarting it with a
larger MAX_ROUNDS extends a finished experiment. It is the only node that
deletes or archives old rollout rounds, and that retires old submission folders
(rolled into retired/round_R.json first, which the report reads). A worker that
leaves the swarm (its heartbeat stops, or its record says it failed) is named in the
log.

Its cost in storage requests grows slowly with the swarm (docs/DRIVE_API.md, about
11 + N/2 a minute at the default settings): peers/ is listed every 2 heartbeats
(liveness is judged over PEER_TIMEOUT, many beats) and liveness comes from that listing;
a record is read only when it changed and is new, has stopped changing (a final
status?) or was last read 10 heartbeats ago (rgym_exp/readers.py). The round's
submissions folder is listed at every tick only once the round may close (it has run
0.8 of the last round's length, or its deadline passed), before that every 2 heartbeats
too. The state file every worker polls is rewritten when a round opens, closes or is
extended, and for its ``waiting_for`` list at most once a minute. Old rounds are found
by a listing once after a start; later ones are retired as they come of age.

Only signed records count (rgym_exp/trust.py): a worker is live by its verified peer
record, and has submitted a round when its submission file there is signed by it (read
once each: a name in the folder is not enough). What was refused is named in one log
line per round, when the next opens.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import replace

from rgym_exp.config import Config
from rgym_exp.drive.layout import parse_round_dir
from rgym_exp.drive.store import StoreError, TransientStoreError
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.heartbeat import Heartbeat
from rgym_exp.readers import Peers, PeerView, retire_submissions, submitted, verified
from rgym_exp.records import RECORD_MAX_BYTES, RoundState, StateTracker, to_json
from rgym_exp.waiting import Waiter, WaitTimeout

log = logging.getLogger(__name__)
FAILED_TICKS_LIMIT = 3  # ticks in a row with a storage error that is not transient: then stop
WAITING_FOR_EVERY = 60.0  # seconds: the state file's waiting_for list is rewritten at most this often
LOOK_BEATS = 2          # peers/, and a round's submissions before it may close: listed at most
#                         every this many heartbeats (and 5 times per PEER_TIMEOUT)
REREAD_BEATS = 10       # a changed peer record is read again at most every this many heartbeats,
SETTLE_BEATS = 2        # ... or once it has not changed for this many (its final write?): a
#                         running node's entry changes between two looks
CLOSE_SOON = 0.8        # a round that has run this fraction of the last one's length may close:
#                         its submissions folder is then listed at every tick. Round 0 holds the
#                         workers' model loading and first evaluation: it predicts nothing


class Coordinator:
    def __init__(self, config: Config, experiment: Experiment, waiter: Waiter, clock=time.time,
                 logs=None):
        self.cfg, self.exp, self.waiter, self.clock = config, experiment, waiter, clock
        self.logs = logs                      # NodeLogs: copied to the folder once we own NODE_ID
        self.layout = experiment.layout
        self.tracker = StateTracker(experiment.reader, self.layout.state_file)
        self.heartbeat = None
        self._peers = Peers(experiment.store, self.layout, experiment.reader,
                            reread_s=REREAD_BEATS * config.HEARTBEAT_INTERVAL,
                            settle_s=SETTLE_BEATS * config.HEARTBEAT_INTERVAL, clock=clock)
        self._live: set[str] = set()
        self._peers_read_at = -math.inf
        self._jitter = random.Random()
        self._looked_for: tuple = ()           # (round, submitters) that made tick look at peers/
        self._done: set[str] = set()             # submissions of _done_round, as last listed
        self._checked: dict = {}                 # (round, node) -> its submission verified?
        self._submitted_at: dict = {}            # node -> when its last new one was first seen
        self._done_round, self._done_at = -1, -math.inf
        self._state_sealed = None                # the state file as last written here
        self._state_lock = threading.Lock()
        self._round_s = None                     # how long the last round after round 0 took
        self._retired_through = None             # rounds up to this one are retired (None: look)
        self._waiting_written_at = -math.inf
        self._worker_seen_at = clock()            # no worker for WAIT_TIMEOUT: give up
        self._last_wait_log = 0.0

    # --- state -------------------------------------------------------------------

    def _write(self, state: RoundState) -> RoundState:
        if self.heartbeat is not None:
            self.heartbeat.ensure_owner()     # a coordinator taken over writes no state
        state = replace(state, updated_at=self.clock(), coordinator=self.cfg.NODE_ID)
        sealed = self.exp.trust.seal(self.layout.state_file, to_json(state))
        with self._state_lock:                # guard_state (heartbeat thread) never writes an
            self.exp.store.write(self.layout.state_file, sealed)   # older state back
            self.tracker.state, self._state_sealed = state, sealed
        return state

    def guard_state(self) -> None:
        """Write the state file back when the folder holds another file under its name
        (called at the heartbeat's look at experiment.json): a forged state is refused by
        every reader, and would otherwise hide the round from them until the next write."""
        if self._state_sealed is None or self.heartbeat is None or not self.heartbeat.owns():
            return
        try:
            with self._state_lock:
                sealed = self._state_sealed
                if self.exp.store.read(self.layout.state_file, RECORD_MAX_BYTES) == sealed:
                    return
                self.exp.trust.count(self.cfg.NODE_ID, "replaced state file")
                self.exp.store.write(self.layout.state_file, sealed)
            log.warning("%s had been replaced by a file this coordinator did not sign: "
                        "written back", self.layout.state_file)
        except StoreError as exc:
            log.warning("state file not checked: %s", exc)

    def _open(self, round_: int) -> RoundState:
        # made only here, before the round opens: a worker never makes them (it waits for
        # them), so Drive never holds two copies of a round folder
        self.exp.store.makedirs(self.layout.rollouts_dir(round_))
        self.exp.store.makedirs(self.layout.submissions_dir(round_))
        now = self.clock()
        refused = self.exp.trust.round_line(f"round {round_ - 1}" if round_ else "at start")
        if refused:
            log.warning("%s", refused)
        log.info("round %d opened (deadline in %.0fs)", round_, self.cfg.ROUND_TIMEOUT)
        return self._write(RoundState(round=round_, started_at=now, deadline=now + self.cfg.ROUND_TIMEOUT,
                                      max_rounds=self.cfg.MAX_ROUNDS))

    def _newest_round(self) -> int:
        """The newest round holding a submission signed by its worker (-1: none): where a
        coordinator whose state file is gone, or refused (replaced by someone without its
        key), resumes. A folder alone proves nothing (anyone can make one), so a planted
        ``round_999`` cannot advance the swarm."""
        rounds = {parse_round_dir(e.name) for folder in (self.layout.rollouts_root,
                                                          self.layout.submissions_root)
                  for e in self.exp.store.list(folder) if e.is_dir}
        for r in sorted((r for r in rounds if r is not None and r < self.cfg.MAX_ROUNDS),
                        reverse=True):
            if self.submitted(r):
                return r
        return -1

    def resume_or_start(self) -> RoundState:
        state = self.tracker.refresh()
        if state is None:
            newest = self._newest_round()
            if newest > 0:
                log.warning("no usable state file (missing, or refused: not signed by this "
                            "coordinator); resuming at round %d, the newest round with a "
                            "signed submission", newest)
            return self._open(max(newest, 0))
        if state.finished and state.round + 1 < self.cfg.MAX_ROUNDS:
            log.info("experiment had finished at round %d; MAX_ROUNDS=%d extends it", state.round,
                     self.cfg.MAX_ROUNDS)
            return self._open(state.round + 1)
        if not state.finished:
            # the file's times are on the clock of whoever wrote it: keep the round's elapsed
            # and remaining time, re-based on this machine's clock
            now = self.clock()
            left = min(max(state.deadline - state.updated_at, 0.0), self.cfg.ROUND_TIMEOUT)
            elapsed = max(state.updated_at - state.started_at, 0.0)
            log.info("resuming at round %d (from the state file; %.0fs left before its deadline)",
                     state.round, left)
            state = self._write(replace(state, started_at=now - elapsed, deadline=now + left,
                                        max_rounds=max(self.cfg.MAX_ROUNDS, state.round + 1)))
        return state

    # --- observing the swarm ----------------------------------------------------------

    @property
    def look_every(self) -> float:
        """Seconds between looks at peers/ (and at a round's submissions before it may close)."""
        return max(self.cfg.POLL_INTERVAL, min(LOOK_BEATS * self.cfg.HEARTBEAT_INTERVAL,
                                               self.cfg.PEER_TIMEOUT / 5))

    @property
    def peers(self) -> dict[str, PeerView]:
        return self._peers.views

    def observe_peers(self) -> dict[str, PeerView]:
        """Look at peers/ (at most every ``look_every`` seconds: liveness is judged over
        PEER_TIMEOUT, many beats): one listing, reads of the records that changed
        (rgym_exp/readers.py). The looks are jittered by a quarter either way, so they
        cannot lock in phase with a heartbeat and a forger's rewrites of the same record."""
        now = self.clock()
        if now - self._peers_read_at < self.look_every:
            return self.peers
        self._peers_read_at = now + self._jitter.uniform(-0.25, 0.25) * self.look_every
        return self._peers.refresh()

    def live_workers(self) -> set[str]:
        """Workers whose verified peer record changed within PEER_TIMEOUT, or whose verified
        submission this coordinator first saw within it: a record that someone keeps
        overwriting (every read refused) cannot hide a worker that still submits."""
        now = self.clock()
        live = {node for node, view in self.peers.items()
                if view.record.role == "worker" and view.record.status in ("starting", "running")
                and now - view.last_change <= self.cfg.PEER_TIMEOUT}
        live |= {node for node, seen in self._submitted_at.items()
                 if now - seen <= self.cfg.PEER_TIMEOUT and self._still_running(node)}
        for node in sorted(self._live - live):    # say who left, once, and why
            view = self.peers.get(node)
            record = view.record if view is not None else None
            if record is None:
                log.warning("worker %s is gone: no verified heartbeat, no submission for %.0fs",
                            node, now - self._submitted_at.get(node, now))
            elif record.status == "finished":
                log.info("worker %s finished (last round %d)", node, record.round)
            elif record.status in ("starting", "running"):
                log.warning("worker %s is gone: no heartbeat for %.0fs (last seen at round %d, %s)",
                            node, now - view.last_change, record.round, record.phase or "-")
            else:
                log.warning("worker %s left: its record says %s (at round %d)", node,
                            record.status, record.round)
        for node in sorted(live - self._live):
            view = self.peers.get(node)
            log.info("worker %s is live (round %d, %s)", node,
                     view.record.round if view else self._done_round,
                     (view.record.phase or "-") if view else "its heartbeat unreadable: "
                     "live by its submissions")
        self._live = live
        return live

    def _still_running(self, node: str) -> bool:
        view = self.peers.get(node)
        return view is None or view.record.status in ("starting", "running")

    def submitted(self, round_: int) -> set[str]:
        """Workers whose submission of ``round_`` is in its folder and signed by them."""
        self._checked = {k: v for k, v in self._checked.items() if k[0] >= round_ - 1}
        before = {n for (r, n), ok in self._checked.items() if r == round_ and ok}
        done = verified(self.exp.reader, self.layout, round_,
                        submitted(self.exp.store, self.layout, round_), self._checked)
        for node in done - before:                # first seen verified now
            self._submitted_at[node] = self.clock()
        return done

    def look_at_submissions(self, state: RoundState) -> set[str]:
        """Who submitted the current round: one listing of its folder at every tick once the
        round may close (no round after round 0 closed yet here, it has run CLOSE_SOON of the
        last one's length, or its deadline passed); before that at most every ``look_every``
        seconds, so a round of minutes costs a few listings, not one every POLL_INTERVAL."""
        now = self.clock()
        may_close = (self._round_s is None or now >= state.deadline
                     or now - state.started_at >= CLOSE_SOON * self._round_s)
        if (may_close or state.round != self._done_round
                or now - self._done_at >= self.look_every):
            self._done = self.submitted(state.round)
            self._done_round, self._done_at = state.round, now
        return self._done

    # --- one look at the folder --------------------------------------------------------

    def tick(self, state: RoundState) -> RoundState:
        self.observe_peers()
        now, live = self.clock(), self.live_workers()
        done = self.look_at_submissions(state)
        unknown = (state.round, frozenset(done - set(self.peers)))
        if unknown[1] and unknown != self._looked_for:
            # a submitter whose record we have not read: the view of peers/ predates it, and
            # with it maybe other workers (a first round shorter than look_every): look now,
            # once per round and set of strangers, before deciding anything on it
            self._looked_for, self._peers_read_at = unknown, -math.inf
            self.observe_peers()
            live = self.live_workers()
        waiting = sorted(live - done)
        if live or done:
            self._worker_seen_at = now
        elif now - self._worker_seen_at >= self.cfg.WAIT_TIMEOUT:
            raise WaitTimeout(f"no live worker for {now - self._worker_seen_at:.0f}s (WAIT_TIMEOUT); "
                              f"the experiment stays at round {state.round} and a restarted "
                              "coordinator continues it")
        if self.cfg.COORDINATOR_ROUND_INTERVAL > 0:
            if now >= state.started_at + self.cfg.COORDINATOR_ROUND_INTERVAL:
                log.info("round %d: interval elapsed; %d submission(s)", state.round, len(done))
                return self.advance(state)
            return state
        need = math.ceil(self.cfg.QUORUM * len(live)) if live else 1
        if done and len(done & live if live else done) >= need:
            log.info("round %d closed: %d of %d live worker(s) submitted%s", state.round,
                     len(done & live), len(live), f" (still running: {', '.join(waiting)})"
                     if waiting else "")
            return self.advance(state)
        if now >= state.deadline:
            if done:
                log.warning("round %d timed out after %.0fs with %d submission(s); late: %s",
                            state.round, now - state.started_at, len(done),
                            ", ".join(waiting) or "none live")
                return self.advance(state)
            log.warning("round %d: no submission after %.0fs (%d live worker(s)); extending the "
                        "deadline", state.round, now - state.started_at, len(live))
            self._waiting_written_at = now
            return self._write(replace(state, deadline=now + self.cfg.ROUND_TIMEOUT,
                                       waiting_for=waiting))
        if waiting != state.waiting_for and now - self._waiting_written_at >= WAITING_FOR_EVERY:
            self._waiting_written_at = now   # every worker polls this file: rewrite it rarely
            state = self._write(replace(state, waiting_for=waiting))
        if now - self._last_wait_log >= 60:
            self._last_wait_log = now
            log.info("round %d: %d submitted, waiting for %s (deadline in %.0fs)", state.round,
                     len(done), ", ".join(waiting) or "workers to join", state.deadline - now)
        return state

    def advance(self, state: RoundState) -> RoundState:
        if state.round > 0:
            self._round_s = max(self.clock() - state.started_at, 0.0)
        if state.round + 1 >= self.cfg.MAX_ROUNDS:
            log.info("experiment finished after %d round(s)", state.round + 1)
            return self._write(replace(state, finished=True, waiting_for=[]))
        new = self._open(state.round + 1)
        self.retire_old_rounds(new.round)
        return new

    def retire_old_rounds(self, current: int) -> None:
        """Delete (or archive) rollout rounds older than the last N kept, and roll those
        rounds' submissions into retired/round_R.json before deleting their folders
        (a swarm would otherwise reach a shared drive's item cap). The first time after a
        start it lists what is there; then it retires the rounds that have come of age."""
        if not self.cfg.ROLLOUT_CLEANUP_ENABLED:
            return
        cutoff = current - self.cfg.ROLLOUT_KEEP_LAST_N_ROUNDS
        store = self.exp.store
        try:
            if self._retired_through is None:      # after a start: whatever old rounds are there
                rollouts = sorted(r for r in (parse_round_dir(e.name) for e in
                                              store.list(self.layout.rollouts_root))
                                  if r is not None and r <= cutoff)
                submissions = sorted(r for r in (parse_round_dir(e.name) for e in
                                                 store.list(self.layout.submissions_root)
                                                 if e.is_dir) if r is not None and r <= cutoff)
            else:                                  # this coordinator opened them: no listing
                rollouts = submissions = list(range(max(self._retired_through + 1, 0), cutoff + 1))
            for r in rollouts:
                if self.cfg.ROLLOUT_ARCHIVE_OLD:
                    store.move(self.layout.rollouts_dir(r), self.layout.archived_rollouts_dir(r))
                else:
                    store.delete(self.layout.rollouts_dir(r))
                log.info("%s rollouts of round %d", "archived" if self.cfg.ROLLOUT_ARCHIVE_OLD
                         else "removed", r)
            for r in submissions:
                # merge with an earlier try's file only where one can exist (after a start)
                n = retire_submissions(store, self.layout, r, self.exp.reader,
                                       merge=self._retired_through is None)
                log.info("retired the %d submission(s) of round %d into %s", n, r,
                         self.layout.retired_submissions(r))
            self._retired_through = cutoff if self._retired_through is None else max(
                cutoff, self._retired_through)
        except StoreError as exc:
            self._retired_through = None           # look again next time
            log.warning("old rounds not retired this time: %s", exc)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        beat = self.heartbeat = Heartbeat(self.exp, self.cfg.NODE_ID, "coordinator",
                                          self.cfg.HEARTBEAT_INTERVAL, self.waiter)
        beat.claim()                      # first: a duplicate NODE_ID writes nothing at all
        beat.on_presence = self.guard_state
        if self.logs is not None:
            self.logs.start(beat)
        beat.start()
        status = "failed"
        try:
            info = self.exp.create_or_check(question_source(self.cfg))
            if self.logs is not None:
                self.logs.bind(info.instance_id)
            state = self.resume_or_start()
            failed_ticks = 0
            while not state.finished:
                beat.update(round=state.round, phase="waiting for submissions")
                self.waiter.pause(self.cfg.POLL_INTERVAL)
                try:
                    state = self.tick(state)
                    failed_ticks = 0
                except TransientStoreError as exc:  # already retried: try at the next tick
                    log.warning("coordinator tick failed: %s", exc)
                except StoreError as exc:  # full, read-only, no permission: say so, then stop
                    failed_ticks += 1
                    log.error("coordinator tick failed (%d/%d): %s", failed_ticks,
                              FAILED_TICKS_LIMIT, exc)
                    if failed_ticks >= FAILED_TICKS_LIMIT:
                        raise
            beat.update(round=state.round, phase="finished")
            status = "finished"
            log.info("experiment %s finished (round %d); exiting", self.cfg.EXPERIMENT_NAME,
                     state.round)
            return 0
        except BaseException:
            status = "stopped"
            raise
        finally:
            beat.close(status)
