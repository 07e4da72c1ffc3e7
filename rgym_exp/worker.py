"""A worker: one node's rounds, from questions to a submitted update.

Round R (DESIGN.md, "One round"):
  1. draw I questions (deterministic in seed, node, round);
  2. generate G completions for each in one batched call and score them;
  3. publish rollouts/round_R/{node_id}.s{n}.json (or one chunk per generation batch);
  4. gather J fresh peer groups with signal, never used before (rgym_exp/exchange.py:
     a few listings + at most 2J reads, waiting a little for the current round);
  5. one GRPO update on the I local + J external groups;
  6. submit, append a metrics line, checkpoint when due;
  7. wait for the next round (or join a later one if the swarm moved on).

Steps 1-2 of round R+1 (and its evaluation, when due) run *ahead*, between submitting R
and R+1 opening, so the coordinator's close-and-open latency hides behind generation.
Nothing of round R+1 is published before it opens (the coordinator creates its folder
then); a round the swarm skips is dropped; no round past MAX_ROUNDS is generated. The
questions and sampling seeds depend only on seed, node and round, and the model is the
one that enters R+1 either way: running ahead changes when, never what.

A round is done when its submission file exists: a restarted worker resumes
from its newest checkpoint and never does (or records) a round twice.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from genrl.curriculum import Curriculum
from genrl.data import round_rng, stable_int
from genrl.evaluation import EVAL_BATCH, EVAL_SEED, EvalSet, evaluate
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup
from genrl.models import build_prompt, load_policy
from genrl.rewards import RewardRule
from genrl.rollouts import RolloutGroup
from genrl.sapo import ExternalSelector, ScoredGroup
from genrl.scoring import Scorer
from rgym_exp.checkpoints import CheckpointManager
from rgym_exp.config import Config
from rgym_exp.exchange import RolloutExchange
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.heartbeat import Heartbeat
from rgym_exp.node_log import NodeLogs
from rgym_exp.progress import progress
from rgym_exp.records import RoundState, StateTracker, Submission, write_record
from rgym_exp.takehome import TakeHome
from rgym_exp.waiting import Stopped, Waiter

log = logging.getLogger(__name__)


def grpo_config(cfg: Config) -> GRPOConfig:
    return GRPOConfig(learning_rate=cfg.LEARNING_RATE, max_new_tokens=cfg.MAX_NEW_TOKENS,
                      temperature=cfg.TEMPERATURE, top_p=cfg.TOP_P, beta=cfg.BETA,
                      epsilon_low=cfg.EPSILON_LOW, epsilon_high=cfg.EPSILON_HIGH,
                      num_iterations=cfg.NUM_ITERATIONS, micro_batch_size=cfg.MICRO_BATCH_SIZE,
                      gradient_checkpointing=cfg.GRADIENT_CHECKPOINTING,
                      max_grad_norm=cfg.MAX_GRAD_NORM)


CPU_EVAL_SAMPLE = 50   # held-out questions a CPU node answers by default (EVAL_SAMPLE)

@dataclass
class Prepared:
    """A round's work before its exchange: the evaluation's metrics and the local groups,
    with the files not published yet (all of them when generated ahead of the round)."""
    round: int
    metrics: dict
    local: list[ScoredGroup]
    t_generate: float
    seconds: float                  # evaluation + generation
    ahead: bool = False
    unpublished: list[tuple[Optional[int], list[ScoredGroup]]] = field(default_factory=list)


class Worker:
    def __init__(self, config: Config, experiment: Experiment, waiter: Waiter, logs: NodeLogs):
        self.cfg, self.exp, self.waiter, self.logs = config, experiment, waiter, logs
        self.node = config.NODE_ID
        self.source = question_source(config)
        self.exchange = RolloutExchange(experiment, self.node)
        self.scorer = Scorer(RewardRule(config.ANSWER_FALLBACK, config.PARTIAL_CREDIT,
                                        config.FORMAT_REWARD_WEIGHT))
        self.selector = ExternalSelector(self.source, self.scorer, self.node)
        self.tracker = StateTracker(experiment.reader, experiment.layout.state_file)
        self.finished_at = None                # the experiment had finished before this start
        self.heartbeat = Heartbeat(experiment, self.node, "worker", config.HEARTBEAT_INTERVAL,
                                   waiter, model=config.MODEL_NAME)
        self.trainer = None
        self.checkpoints = None
        self.last_done = -1
        self.last_checkpoint = -1
        self.curriculum = (Curriculum([t.name for t in self.source.tasks])
                           if getattr(self.source, "curriculum", False) else None)
        if self.curriculum is not None:       # peers' groups tell where the swarm finds signal
            self.selector.on_scored = lambda g: self.curriculum.observe(
                g.question.source.get("task"), g.question.source.get("level"), g.has_signal)
        # held out whether or not this node evaluates: never drawn, refused from peers
        self.held_out = self.source.eval_set(config.EVAL_QUESTIONS, EVAL_SEED)
        self.eval_set = None                        # chosen once the device is known (setup)
        self.evaluated = False                      # this process has not evaluated yet
        self.takehome = TakeHome(config, experiment, self.heartbeat, os.path.dirname(logs.local))

    # --- start-up -------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.heartbeat.update(phase="waiting for experiment.json")
        info = self.exp.wait_and_check(self.source, self.waiter)
        self.logs.bind(info.instance_id)
        state = self.tracker.refresh()
        if state is not None and state.finished and state.round + 1 >= cfg.MAX_ROUNDS:
            self.finished_at = state.round     # nothing to do: say so before loading a model
            return
        self.scorer.warm()                        # the verifier processes start meanwhile
        self.heartbeat.update(phase="loading model")
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # per-tensor loading bars do not belong in log files
        t0 = time.perf_counter()
        policy = load_policy(cfg.MODEL_NAME, cfg.DEVICE, cfg.DTYPE,
                             cfg.HUGGINGFACE_ACCESS_TOKEN or None)
        log.info("model %s loaded in %.0fs on %s (compute %s)", policy.description,
                 time.perf_counter() - t0, policy.device, str(policy.compute_dtype).split(".")[-1])
        self.trainer = GRPOTrainer(policy, grpo_config(cfg))
        self.selector.cut = self.trainer.cut_completion   # peers' text scored as trained on
        self.eval_set = self._eval_set(policy.device)
        staging = os.path.join(os.path.dirname(self.logs.local), "checkpoint-staging")
        self.checkpoints = CheckpointManager(self.exp, self.node, staging, cfg.CHECKPOINT_KEEP,
                                             cfg.CHECKPOINT_MODE, cfg.CHECKPOINT_INTERVAL,
                                             cfg.CHECKPOINT_MINUTES)
        state = self.checkpoints.restore(self.trainer)
        if state is not None:
            self.last_done = self.last_checkpoint = int(state["round"])
            if self.curriculum is not None and isinstance(state.get("curriculum"), dict):
                self.curriculum.restore(state["curriculum"])
        self.takehome.start(self.trainer)       # trackers, Hub write check, credit tally
        self.logs.event("started", model=policy.description, resumed_round=self.last_done)

    def _eval_set(self, device) -> Optional[EvalSet]:
        """The held-out questions this node answers: EVAL_SAMPLE of them, or by default all
        on an accelerator and the first CPU_EVAL_SAMPLE (spread over the tasks) on a CPU,
        where 50 took 340 s on a busy machine and the time grows with the count."""
        if not self.cfg.EVAL_INTERVAL:
            return None
        n = self.cfg.EVAL_SAMPLE or (CPU_EVAL_SAMPLE if str(device) == "cpu" else len(self.held_out))
        if n < len(self.held_out):
            log.info("evaluating the first %d of the %d held-out questions%s", n,
                     len(self.held_out), "" if self.cfg.EVAL_SAMPLE else
                     f" (the CPU default; EVAL_SAMPLE={len(self.held_out)} answers them all, "
                     "for a comparison that can see a 5-point effect)")
        return EvalSet(self.held_out[:n])

    def save_checkpoint(self) -> None:
        self.heartbeat.update(phase="saving checkpoint")
        extra = {"node_id": self.node, "model": self.cfg.MODEL_NAME}
        if self.curriculum is not None:
            extra["curriculum"] = self.curriculum.state()
        self.checkpoints.save(self.trainer, self.last_done, extra,
                              before_write=self.heartbeat.ensure_owner)
        self.last_checkpoint = self.last_done
        self.logs.event("checkpoint_saved", round=self.last_done)

    # --- the loop ---------------------------------------------------------------------

    def next_round(self) -> RoundState:
        def ready():
            state = self.tracker.refresh()
            return state if state and (state.finished or state.round > self.last_done) else None
        self.heartbeat.update(phase=f"waiting for round {self.last_done + 1}")
        return self.waiter.until(ready, what=f"round {self.last_done + 1} to open",
                                 progress=lambda: self._waiting_on())

    def _waiting_on(self) -> str:
        state = self.tracker.state
        if state is None:
            return "no round state yet (is the coordinator running?)"
        return f"coordinator is at round {state.round}, waiting for {', '.join(state.waiting_for) or '-'}"

    def done(self, round_: int) -> bool:
        return self.exp.reader.read(Submission, self.exp.layout.submission(round_, self.node)) is not None

    def run(self) -> int:
        self.heartbeat.claim()                # first: a duplicate NODE_ID writes nothing at all
        self.logs.start(self.heartbeat)
        self.heartbeat.start()
        status = "failed"
        try:
            self.setup()
            if self.finished_at is not None:
                log.info("experiment %s had already finished at round %d (MAX_ROUNDS=%d): nothing "
                         "to do; run it with a larger MAX_ROUNDS to extend it",
                         self.cfg.EXPERIMENT_NAME, self.finished_at, self.cfg.MAX_ROUNDS)
                status = "finished"
                return 0
            ahead = None
            while True:
                state = self.next_round()
                if state.finished:
                    break
                if ahead is not None and ahead.round != state.round:
                    log.info("round %d was generated ahead, but the swarm moved on to round %d: "
                             "dropped", ahead.round, state.round)
                    ahead = None
                if self.done(state.round):
                    log.info("round %d already submitted by this node; skipping", state.round)
                    self.last_done = state.round
                    continue
                self.run_round(state.round, ahead)
                self.last_done = state.round
                if self.checkpoints.due(self.last_done):
                    self.save_checkpoint()
                ahead = self._ahead(state.round)
            if self.last_done > self.last_checkpoint:
                self.save_checkpoint()
            self.takehome.at_end(self.last_done)    # EXPORT_AT_END, the final Hub push
            log.info("experiment finished; this worker did rounds up to %d", self.last_done)
            self.logs.event("finished", round=self.last_done)
            status = "finished"
            return 0
        except Stopped as exc:
            status = "stopped"
            log.info("stopping: %s", exc)
            if (self.trainer is not None and self.last_done > self.last_checkpoint
                    and not self.heartbeat.taken_over.is_set()):
                self.save_checkpoint()  # nothing learned is lost on a clean stop
            raise
        finally:
            self.takehome.close()
            self.heartbeat.close(status)

    # --- one round ----------------------------------------------------------------------

    def run_round(self, R: int, prepared: Optional[Prepared] = None) -> None:
        """Round R from its evaluation (or from what was ``prepared`` ahead) to its submission."""
        t_round = time.perf_counter()
        if prepared is None:
            prepared = self._prepare(R)
        elif prepared.unpublished:
            self._publish(R, prepared.unpublished)
            log.info("round %d: opened; published what was generated ahead", R)
        self.waiter.check()
        local, t_generate = prepared.local, prepared.t_generate
        gathered, t_gather = self._gather(R, t_generate)
        self.waiter.check()
        train = self._train(R, local, gathered.groups)
        metrics = {"round": R, "node_id": self.node, **prepared.metrics}
        metrics.update(round_metrics(local, gathered, self.selector, R))
        metrics.update(self._update_curriculum(R, local))
        scoring, failures = self.scorer.take_round()
        metrics.update(scoring)
        if failures:
            log.warning("round %d: %s", R, failures)
        ahead_s = prepared.seconds if prepared.ahead else 0.0   # else inside t_round already
        metrics.update({"time/generate_s": t_generate, "time/gather_s": t_gather, **train,
                        "time/ahead_s": ahead_s,
                        "time/round_s": time.perf_counter() - t_round + ahead_s})
        self._submit(R, metrics, gathered.groups)

    def _ahead(self, R: int) -> Optional[Prepared]:
        """Round R+1 prepared while the coordinator has not opened it yet (module doc), or
        None: the swarm is past R already, finished, or R was the last round."""
        state = self.tracker.refresh()
        if state is None or state.finished or state.round != R or R + 1 >= state.max_rounds:
            return None
        return self._prepare(R + 1, ahead=True)

    def _prepare(self, R: int, ahead: bool = False) -> Prepared:
        """Round R's evaluation when due (the model as it enters R) and its local groups,
        published as they are made unless ``ahead``."""
        t0 = time.perf_counter()
        metrics = {}
        if self.eval_set is not None and (not self.evaluated or R % self.cfg.EVAL_INTERVAL == 0):
            metrics = self._evaluate(R)
        local, t_generate, unpublished = self._generate(R, publish=not ahead)
        return Prepared(R, metrics, local, t_generate, time.perf_counter() - t0, ahead, unpublished)

    def _evaluate(self, R: int) -> dict:
        self.heartbeat.update(round=R, phase="evaluating")
        n = len(self.eval_set.questions)
        steps = -(-n // EVAL_BATCH) * self.cfg.MAX_NEW_TOKENS
        with progress(steps, f"round {R} evaluating", "steps") as bar:
            out = evaluate(self.trainer, self.eval_set, self.scorer, build_prompt,
                           on_token=lambda: bar.update(1))
        self.evaluated = True
        self.heartbeat.update(last_eval=out["eval/accuracy"])
        per_task = ", ".join(f"{task} {out['eval/' + task]:.2f}" for task in self.eval_set.tasks)
        log.info("round %d: held-out accuracy %.3f ± %.3f on %d questions in %.0fs (%s)", R,
                 out["eval/accuracy"], out["eval/stderr"], n, out["time/eval_s"], per_task)
        return out

    def _update_curriculum(self, R: int, local: list[ScoredGroup]) -> dict:
        """Count this round's correct completions per task; move levels; report them."""
        if self.curriculum is None:
            return {}
        for g in local:
            self.curriculum.record(g.question.source.get("task"), sum(g.correct),
                                   len(g.completions), g.has_signal)
        for task, top in self.source.top.items():   # levels found unusable stay out of reach
            self.curriculum.cap(task, top)
        for task, (old, new, rate) in self.curriculum.update().items():
            log.info("round %d: %s %s to curriculum level %d (success rate %.2f)", R, task,
                     "up" if new > old else "down", new, rate)
            self.logs.event("curriculum", round=R, task=task, level=new, was=old, success=rate)
        return {f"curriculum/{task}": level for task, level in sorted(self.curriculum.levels.items())}

    def _generate(self, R: int, publish: bool = True):
        """This round's scored local groups, the seconds it took, and the (chunk, groups)
        files left to publish (none when ``publish``: they went out as they were made)."""
        cfg = self.cfg
        I, G = cfg.NUM_TRAIN_SAMPLES, cfg.NUM_GENERATIONS
        self.heartbeat.update(round=R, phase="generating" if publish else
                              f"generating round {R} ahead (it has not opened yet)")
        questions = self.source.draw(self.node, R, I, **(
            {"levels": self.curriculum.levels, "pick": self.curriculum.pick}
            if self.curriculum is not None else {}))
        per_call = cfg.GENERATION_BATCH_SIZE or I
        calls = range(0, I, per_call)
        chunked = cfg.ROLLOUT_PUBLISH_FREQUENCY == "generation"
        drawn = collections.Counter(q.source.get("task", "question") for q in questions)
        log.info("round %d: generating %d x %d completions (up to %d tokens each)%s: %s", R, I, G,
                 cfg.MAX_NEW_TOKENS, "" if publish else ", ahead of the round's opening",
                 ", ".join(f"{t} x{n}" if n > 1 else t for t, n in drawn.items()))
        local: list[ScoredGroup] = []
        held: list[tuple[Optional[int], list[ScoredGroup]]] = []

        def publish_or_hold(chunk: Optional[int], groups: list[ScoredGroup]) -> None:
            if publish:
                self._publish(R, [(chunk, groups)])
            else:
                held.append((chunk, groups))

        t0 = time.perf_counter()
        with progress(len(calls) * cfg.MAX_NEW_TOKENS, f"round {R} generating", "steps") as bar:
            for k, start in enumerate(calls):
                batch = questions[start:start + per_call]
                prompts = [build_prompt(self.trainer.tokenizer, q.text) for q in batch]
                made = self.trainer.generate(prompts, G,
                                             seed=stable_int(f"{cfg.SEED}/{self.node}/{R}/{k}") % 2**62,
                                             on_token=lambda: bar.update(1))
                new = [self._scored(q, prompt, comps, R) for q, prompt, comps in zip(batch, prompts, made)]
                local += new
                if chunked:
                    publish_or_hold(k, new)
        if not chunked:
            publish_or_hold(None, local)
        seconds = time.perf_counter() - t0
        log.info("round %d: generated in %.0fs, reward mean %.3f (%d of %d groups with reward "
                 "signal); %s", R, seconds, float(np.mean([r for g in local for r in g.rewards])),
                 sum(g.has_signal for g in local), len(local),
                 "published" if publish else "held until the round opens")
        return local, seconds, held

    def _scored(self, question, prompt: str, completions, R: int) -> ScoredGroup:
        """A local group, scored: each completion is the sampler's ids (at most
        MAX_NEW_TOKENS) and the text they decode to, so what is scored is what is trained."""
        verdicts = self.scorer.score(question, [c.text for c in completions])
        return ScoredGroup(question, [c.text for c in completions], [v.reward for v in verdicts],
                           [c.ended for c in completions], self.node, R,
                           [c.ids for c in completions], prompt, [v.correct for v in verdicts])

    def _gather(self, R: int, t_generate: float):
        """Peer groups chosen for this round (rgym_exp/exchange.py), and the seconds it took."""
        cfg = self.cfg
        self.heartbeat.update(phase="gathering")
        t0 = time.perf_counter()
        self.exchange.recall_used(R, self.selector, cfg.MAX_STALENESS)
        # at least two looks at the folder: a listing lags the writes it shows (Drive's by
        # seconds), and a round faster than that would otherwise never see its peers'
        wait_s = max(cfg.PEER_WAIT * t_generate, 2 * cfg.POLL_INTERVAL) if cfg.PEER_WAIT else 0.0
        gathered = self.exchange.gather(
            R, cfg.NUM_TRANSPLANT_TREES, self.selector, round_rng(cfg.SEED, self.node + "/sapo", R),
            self.waiter, wait_s=wait_s, max_staleness=cfg.MAX_STALENESS, poll_s=cfg.POLL_INTERVAL)
        if cfg.NUM_TRANSPLANT_TREES:
            sel = self.selector
            dropped = [f"{n} {why}" for n, why in ((sel.zero_advantage, "without signal"),
                                                  (sel.used_before, "used before"))]
            dropped += [f"{n} x {why}" for why, n in sel.rejected.items()]
            log.info("round %d: gathered %s (of %d peer groups judged: %s)", R, gathered.summary(),
                     sel.considered, ", ".join(dropped))
        return gathered, time.perf_counter() - t0

    def _train(self, R: int, local: list[ScoredGroup], external: list[ScoredGroup]) -> dict:
        self.heartbeat.update(phase="training")
        tr = self.trainer
        groups = [TrainGroup(tr.encode_prompt(g.prompt), g.token_ids, g.rewards) for g in local]
        groups += [TrainGroup(tr.encode_prompt(build_prompt(tr.tokenizer, g.question.text)),
                              g.token_ids or [tr.encode_completion(t, e)
                                              for t, e in zip(g.completions, g.ended)],
                              g.rewards) for g in external]

        with progress(1, f"round {R} training", "micro-batches") as bar:
            def on_batch(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
            train = tr.step(groups, on_batch=on_batch)
        if train["train/sequences"]:
            log.info("round %d: trained on %d local (%d with reward signal) + %d external groups: "
                     "%d sequences, %d tokens in %.0fs", R, len(local),
                     sum(g.has_signal for g in local), len(external), train["train/sequences"],
                     train["train/tokens"], train["time/train_s"])
        else:
            log.info("round %d: no update: all %d local groups have equal rewards and no external "
                     "group was usable", R, len(local))
        return train

    def _submit(self, R: int, metrics: dict, external: list[ScoredGroup]) -> None:
        cfg = self.cfg
        submission = Submission(round=R, node_id=self.node, model=cfg.MODEL_NAME,
                                finished_at=time.time(), metrics=metrics,
                                external=[{"node": g.origin, "round": g.round, "key": g.key,
                                           "reward_mean": float(np.mean(g.rewards))}
                                          for g in external])
        self.heartbeat.ensure_owner()
        write_record(self.exp.trust, self.exp.layout.submission(R, self.node), submission)
        refused = self.exp.trust.round_line(f"round {R}")   # one line per round (trust.py)
        if refused:
            log.warning("%s", refused)
        self.logs.metric({**metrics, "time": time.time()})
        self.takehome.after_round(R, metrics, submission.external)  # credit, trackers, Hub
        self.exchange.recalled.add(R)          # this round's used groups are in memory already
        self.heartbeat.update(last_reward=metrics["reward/mean"],
                              external_used=metrics["external/used"],
                              phase=f"submitted round {R}")
        log.info("round %d submitted in %.0fs: reward %.3f, external %d used", R,
                 metrics["time/round_s"], metrics["reward/mean"], metrics["external/used"])

    def _publish(self, R: int, files: list[tuple[Optional[int], list[ScoredGroup]]]) -> None:
        self.heartbeat.ensure_owner()
        for chunk, groups in files:
            self.exchange.publish(R, self._shareable(groups, R), chunk=chunk)

    def _shareable(self, groups: list[ScoredGroup], R: int) -> list[RolloutGroup]:
        return [RolloutGroup(node_id=self.node, round=R, model=self.cfg.MODEL_NAME,
                             question=g.question.text, source=g.question.source,
                             completions=g.completions, rewards=g.rewards, ended=g.ended)
                for g in groups]


def round_metrics(local: list[ScoredGroup], gathered, selector, R: int) -> dict:
    """The round's rewards and exchange, under the metric names of metrics.jsonl."""
    rewards = [r for g in local for r in g.rewards]
    completions = [t for g in local for t in g.completions]
    return {
        "reward/mean": float(np.mean(rewards)), "reward/std": float(np.std(rewards)),
        "local/groups": len(local), "local/with_signal": sum(g.has_signal for g in local),
        "external/used": len(gathered.groups), "external/considered": selector.considered,
        "external/zero_advantage": selector.zero_advantage,
        "external/used_before": selector.used_before,
        "external/rejected": sum(selector.rejected.values()) + sum(gathered.rejected.values()),
        "external/age_mean": float(np.mean(gathered.ages(R))) if gathered.groups else None,
        "external/wait_s": gathered.waited_s, "external/files_read": gathered.files_read,
        "external/files_listed": gathered.files_listed, "external/listings": gathered.listings,
        "external/broken_claims": gathered.broken_claims,
        "completions/ended_frac": float(np.mean([e for g in local for e in g.ended])),
        "completions/answer_tag_frac": float(np.mean(["<answer>" in t for t in completions])),
    }
