"""Every setting, in one place: environment variable, type, default, help, check.

Nodes are configured only by environment variables (Colab cells export them).
``load_config`` reads them all, rejects bad values with one message that names
the variable, the value and what is allowed (``ConfigError``; the launcher
exits 2), warns about likely typos of known names, and fills in the defaults
that depend on the machine (GDRIVE_PATH, NODE_ID).

Settings marked ``shared`` must agree across one experiment; the coordinator
records them in experiment.json and a node that disagrees refuses to start.
TEST_MODE lowers a few defaults for a quick check (as in the reference fork).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from genrl.tasks import DEFAULT_TASKS
from rgym_exp.drive.backends import check_location
from rgym_exp.drive.faults import parse_faults
from rgym_exp.drive.layout import check_name

COLAB_DRIVE = "/content/drive/MyDrive/rl-swarm"


class ConfigError(ValueError):
    """A setting has a value that is not allowed; the message says which and why."""


def setting(default: Any, help: str, *, choices: tuple = (), min: Optional[float] = None,
            max: Optional[float] = None, shared: bool = False, test_mode: Any = None,
            group: str = "learning", secret: bool = False):
    return field(default=default, metadata=dict(help=help, choices=choices, min=min, max=max,
                                                shared=shared, test_mode=test_mode,
                                                group=group, secret=secret))


@dataclass(frozen=True)
class Config:
    # --- the swarm ---------------------------------------------------------------
    NODE_ROLE: str = setting("swarm", "swarm: a coordinator and NUM_WORKERS workers on this "
                             "machine; coordinator: advances rounds, never trains; worker: trains "
                             "and shares rollouts", choices=("swarm", "coordinator", "worker"),
                             group="swarm")
    GDRIVE_PATH: str = setting("", f"shared folder: a directory (Colab: {COLAB_DRIVE} when that "
                               "exists, else ./swarm_data), gdrive://<folder-id> for the Drive "
                               "API, or a bucket: gs://BUCKET/PREFIX or s3://BUCKET/PREFIX "
                               "(pip install .[gcs] / .[s3]; docs/OBJECT_STORES.md)",
                               group="swarm")
    GDRIVE_CREDENTIALS: str = setting("", "for gdrive:// paths: a service-account key or OAuth token "
                                      "JSON file; default: GOOGLE_APPLICATION_CREDENTIALS, then "
                                      "Colab's google.colab.auth", group="swarm", secret=False)
    GDRIVE_API_ENDPOINT: str = setting("", "for gdrive:// paths: Drive API base URL (tests, "
                                       "proxies); default: Google's", group="swarm")
    EXPERIMENT_NAME: str = setting("rl-swarm", "experiment folder under GDRIVE_PATH/experiments; "
                                   "nodes with the same name form one swarm", group="swarm")
    NODE_ID: str = setting("", "this node's name; default: stable per machine "
                           "(~/.config/rl-swarm/node_id). Swarm mode adds -coordinator / -w1..",
                           group="swarm")
    KEY_DIR: str = setting("", "this machine's node keys (Ed25519, one per NODE_ID, made at a "
                           "node's first start) and the keys its nodes have seen; never inside "
                           "GDRIVE_PATH; default: ~/.config/rl-swarm/keys. Back it up: a node "
                           "whose key is lost cannot continue under its NODE_ID (README, Keys)",
                           group="swarm")
    NUM_WORKERS: int = setting(2, "workers started by NODE_ROLE=swarm", min=1, max=64,
                               group="swarm")
    MAX_ROUNDS: int = setting(2000, "rounds in the experiment (the coordinator's setting)", min=1,
                              test_mode=3, group="swarm")
    ROUND_TIMEOUT: float = setting(1800.0, "seconds a round stays open before the coordinator "
                                   "moves on without stragglers (and names them)", min=1,
                                   group="swarm")
    COORDINATOR_ROUND_INTERVAL: float = setting(0.0, "if > 0: advance every this many seconds "
                                                "regardless of submissions (the reference fork's "
                                                "timer mode); 0: advance on quorum", min=0,
                                                group="swarm")
    QUORUM: float = setting(1.0, "fraction of live workers whose submission closes a round",
                            min=0.01, max=1.0, group="swarm")
    HEARTBEAT_INTERVAL: float = setting(30.0, "seconds between a node's heartbeats", min=0.2,
                                        group="swarm")
    PEER_TIMEOUT: float = setting(300.0, "a worker whose heartbeat has not changed for this many "
                                  "seconds counts as gone", min=1, group="swarm")
    POLL_INTERVAL: float = setting(5.0, "longest pause between two looks at the shared folder "
                                   "(polling is jittered and backs off up to this)", min=0.05,
                                   group="swarm")
    WAIT_TIMEOUT: float = setting(7200.0, "longest a node waits for the swarm (experiment.json, "
                                  "the next round) before it exits with an error", min=1,
                                  group="swarm")
    TEST_MODE: bool = setting(False, "quick check: MAX_ROUNDS=3, NUM_TRAIN_SAMPLES=2, "
                              "NUM_GENERATIONS=4, MAX_NEW_TOKENS=64 unless set", group="swarm")
    # --- learning (SAPO / GRPO) -------------------------------------------------------
    MODEL_NAME: str = setting("HuggingFaceTB/SmolLM2-135M-Instruct", "hub id, local directory or "
                              ".gguf file; nodes may differ (they share text, not weights)")
    SEED: int = setting(42, "experiment seed: question pools and sampling", min=0, shared=True)
    NUM_TRAIN_SAMPLES: int = setting(4, "I: questions (local groups) per round; SAPO paper: "
                                     "I + J = 8", min=1, max=256, test_mode=2)
    NUM_TRANSPLANT_TREES: int = setting(4, "J: external groups sampled from the swarm per round; "
                                        "0 = plain GRPO (paper's best: I=4, J=4)", min=0, max=256)
    NUM_GENERATIONS: int = setting(8, "G: completions per question (paper: 8)", min=2, max=64,
                                   test_mode=4)
    LEARNING_RATE: float = setting(3e-6, "AdamW learning rate; 3e-6 had the smallest gradient "
                                   "norms of the rates whose held-out accuracy rose on SmolLM2-135M "
                                   "in bench/lr_sweep.py (one seed: 1e-5 and 3e-5 not separable "
                                   "from it; 1e-6 flat, 1e-4 collapsed)", min=0, max=1)
    MAX_NEW_TOKENS: int = setting(256, "longest completion, in tokens", min=1, max=32768,
                                  test_mode=64)
    TEMPERATURE: float = setting(0.7, "sampling temperature; 0.7 because SmolLM2-135M's samples "
                                 "at 1.0 are mostly noise (bench/temperature.py)", min=0.01, max=10)
    TOP_P: float = setting(1.0, "nucleus sampling", min=0.01, max=1.0)
    BETA: float = setting(0.0, "KL coefficient to the initial model; 0 loads no reference "
                          "model (SAPO paper: no KL)", min=0)
    EPSILON_LOW: float = setting(0.2, "PPO clip range, lower side", min=0, max=1)
    EPSILON_HIGH: float = setting(0.28, "clip range, upper side (DAPO clip-higher)", min=0, max=10)
    NUM_ITERATIONS: int = setting(1, "optimizer steps per round on the same batch (GRPO mu)",
                                  min=1, max=16)
    MICRO_BATCH_SIZE: int = setting(4, "sequences per forward/backward pass: bounds training "
                                    "memory, whatever I, J and G are", min=1, max=1024)
    GRADIENT_CHECKPOINTING: bool = setting(False, "recompute activations during backward: much "
                                           "less memory for about a third more compute")
    MAX_GRAD_NORM: float = setting(1.0, "gradient clipping norm", min=0.0001)
    TASKS: str = setting(DEFAULT_TASKS, "reasoning-gym task mix, e.g. basic_arithmetic:2"
                         "{min_terms=2},chain_sum; paper: the SAPO paper's nine tasks, weight 1; "
                         "the default adds chain_sum as a warm-up task (empty: the default)",
                         shared=True)
    DATASET_PATH: str = setting("", "use your own questions: a .jsonl/.csv/.parquet file with "
                                "question and answer columns (replaces TASKS)", shared=True)
    DATASET_MATCH: str = setting("auto", "how DATASET_PATH answers are scored",
                                 choices=("auto", "exact", "numeric"), shared=True)
    FORMAT_REWARD_WEIGHT: float = setting(0.0, "bonus for a well-formed <answer> block "
                                          "(paper: off)", min=0, max=10, shared=True)
    ANSWER_FALLBACK: str = setting("guarded", "answer used when a completion has no <answer> "
                                   "tags: guarded: an explicit 'answer is X' or a bare last-line "
                                   "value, never one made of the question's words; none: tags only "
                                   "(the paper's rule); bench/rewards.py", choices=("guarded", "none"),
                                   shared=True)
    PARTIAL_CREDIT: bool = setting(False, "reward the verifier's partial credit for wrong answers "
                                   "(the paper's code does); default: 1 for a correct answer, else "
                                   "0, so crumbs never look like a success (bench/rewards.py)",
                                   shared=True)
    CURRICULUM: bool = setting(True, "move each task's difficulty up or down (reasoning-gym's "
                               "curricula, from level 0) to keep this node's success rate where "
                               "groups have signal, and draw tasks in proportion to where they have "
                               "signal; false: TASKS settings and weights as given (the paper)",
                               shared=True)
    EVAL_INTERVAL: int = setting(10, "held-out evaluation every this many rounds and before the "
                                 "first update (greedy, fixed questions no node trains on); 0: "
                                 "never; "
                                 "(a CPU node's 50 questions took 340 s against rounds of 56-170 s, both workers on a "
                                 "busy 2-core machine)", min=0)
    EVAL_QUESTIONS: int = setting(500, "distinct questions held out for evaluation, spread "
                                  "evenly over the tasks (a level gives at most half of its "
                                  "questions; thin tasks take more levels): no node trains on them, "
                                  "peers' groups of them are refused; 500 sees a 5-point effect "
                                  "between two runs paired by question", min=1, max=4096,
                                  shared=True)
    EVAL_SAMPLE: int = setting(0, "questions of the held-out set one evaluation answers: its "
                               "first N, spread over the tasks (each node's own choice); 0: all "
                               "EVAL_QUESTIONS on a GPU, the first 50 on a CPU (50 took 340 s "
                               "there; the time grows with the count)", min=0, max=4096)
    EVAL_LEVEL: int = setting(0, "curriculum level of the evaluation questions (with CURRICULUM; "
                              "it never follows the training level)", min=0, max=100, shared=True)
    GENERATION_BATCH_SIZE: int = setting(0, "questions per generate call; 0: all I at once",
                                         min=0, max=256)
    MAX_STALENESS: int = setting(1, "if round R has too few peer groups, also look this many "
                                 "rounds back", min=0, max=100)
    PEER_WAIT: float = setting(0.25, "when fewer than J usable peer groups of the current round "
                               "are visible, wait up to this fraction of this round's generation "
                               "time (at least 2 x POLL_INTERVAL, as listings lag writes; 0: "
                               "never wait) for more, before older rounds (bench/exchange.py)",
                               min=0, max=10)
    DEVICE: str = setting("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    DTYPE: str = setting("auto", "compute dtype: auto (bf16 GPU, fp16 old GPU, fp32 CPU)",
                         choices=("auto", "float32", "bfloat16", "float16"))
    HUGGINGFACE_ACCESS_TOKEN: str = setting("", "Hugging Face token: downloads gated or "
                                            "private MODEL_NAMEs and, with write access, pushes "
                                            "to HUB_REPO_ID", secret=True)
    # --- storage and logs -----------------------------------------------------------------
    CHECKPOINT_INTERVAL: int = setting(10, "save a checkpoint every this many rounds (and at the "
                                       "end)", min=1, group="storage")
    CHECKPOINT_KEEP: int = setting(2, "checkpoints kept per node (older ones deleted)", min=1,
                                   group="storage")
    CHECKPOINT_MODE: str = setting("weights", "what a checkpoint keeps: weights (weights, RNG, "
                                   "counters: 0.54 GB for SmolLM2-135M; AdamW's moments start "
                                   "afresh after a restart), half (+ bfloat16 moments: 1.08 GB), "
                                   "exact (+ float32 moments: 1.62 GB; a restart continues bit "
                                   "for bit); bench/checkpoint_restart.py",
                                   choices=("weights", "half", "exact"), group="storage")
    CHECKPOINT_MINUTES: float = setting(0.0, "also save a checkpoint when this many minutes "
                                        "have passed since the last one; 0: by rounds only",
                                        min=0, group="storage")
    RESTART_LIMIT: int = setting(5, "NODE_ROLE=swarm (or the launcher's --restart): restart a "
                                 "node that failed, after 10 s, 20 s, 40 s.. (at most 5 min), "
                                 "at most this many times in a row (never after exit 2: a bad "
                                 "setting, or 4: taken over); 0: never", min=0, max=1000,
                                 group="swarm")
    ROLLOUT_PUBLISH_FREQUENCY: str = setting("round", "round (or stage): one rollout file per "
                                             "round; generation: one per generation batch",
                                             choices=("round", "stage", "generation"),
                                             group="storage")
    ROLLOUT_CLEANUP_ENABLED: bool = setting(True, "coordinator removes rollout folders older "
                                            "than ROLLOUT_KEEP_LAST_N_ROUNDS, and rolls those "
                                            "rounds' submissions into retired/round_R.json (a "
                                            "shared drive holds 400,000 items at most)",
                                            group="storage")
    ROLLOUT_KEEP_LAST_N_ROUNDS: int = setting(10, "rollout and submission rounds kept when "
                                              "cleanup is on", min=1, group="storage")
    ROLLOUT_ARCHIVE_OLD: bool = setting(False, "move old rollout rounds to archive/ instead of "
                                        "deleting them", group="storage")
    LOG_FLUSH_INTERVAL: float = setting(60.0, "seconds between copies of the node's logs to the "
                                        "shared folder (also after each round and on exit); "
                                        "each changed log is one upload (bench/storage_scale.py)",
                                        min=0.1, group="storage")
    LOG_LEVEL: str = setting("INFO", "console and stdout.log detail",
                             choices=("DEBUG", "INFO", "WARNING", "ERROR"), group="storage")
    CACHE_DIR: str = setting("~/.cache/rl-swarm", "local scratch: log buffers, checkpoint "
                             "staging", group="storage")
    # --- what a user takes home (rgym_exp/takehome.py) ---------------------------------------
    EXPORT_AT_END: bool = setting(False, "at the end of the run, write this worker's model as a "
                                  "standard Hugging Face model directory (weights, config, "
                                  "tokenizer, model card) to exports/{NODE_ID}/ in the experiment "
                                  "folder; any checkpoint exports later with python -m "
                                  "rgym_exp.export", group="outputs")
    HUB_REPO_ID: str = setting("", "push this worker's model to this Hugging Face model repository "
                               "(user/name; {node} becomes NODE_ID, needed when several workers "
                               "share the setting), created private if absent; needs "
                               "HUGGINGFACE_ACCESS_TOKEN with write access, else one log line and "
                               "no push; empty: no push", group="outputs")
    HUB_PUSH_INTERVAL: int = setting(10, "with HUB_REPO_ID: push every this many rounds (a push "
                                     "due under 30 s after the last one waits for the next: the "
                                     "Hub allows 128 commits per hour per repository) and at the "
                                     "end (docs/TAKEHOME.md)", min=1, group="outputs")
    REPORT_TO: str = setting("none", "also log each round's metrics, under metrics.jsonl's names, "
                             "to tensorboard, wandb and/or trackio (comma-separated, TRL's "
                             "report_to); each is an extra: pip install .[tensorboard] etc.; all "
                             "work offline (TensorBoard files copied to logs/{NODE_ID}/tensorboard, "
                             "W&B offline without WANDB_API_KEY, trackio's local store; "
                             "docs/TAKEHOME.md)", group="outputs")
    FAULTS: str = setting("", "testing only: inject storage faults, e.g. io_error=0.1,stale=0.2,"
                          "delay=2,partial=0.05,conflict=0.05,slow_list=0.5,seed=1 (see "
                          "rgym_exp/drive/faults.py, docs/RELIABILITY.md)", group="storage")

    @property
    def is_colab_drive(self) -> bool:
        return self.GDRIVE_PATH.startswith("/content/drive")

    def shared_settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["shared"]}

    def effective(self, changed_only: bool = False) -> dict:
        """Setting -> value (secrets masked); ``changed_only``: those not at their default."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if changed_only and value == f.default:
                continue
            out[f.name] = "***" if f.metadata["secret"] and value else value
        return out


SETTINGS = {f.name: f for f in dataclasses.fields(Config)}
SHARED_SETTINGS = tuple(name for name, f in SETTINGS.items() if f.metadata["shared"])
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse(f: dataclasses.Field, raw: str) -> Any:
    meta, kind, text = f.metadata, f.type, raw.strip()
    try:
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        value = {"int": int, "float": float, "str": str}[kind](text)
    except ValueError:
        allowed = "true or false" if kind == "bool" else f"a{'n' if kind == 'int' else ''} {kind}"
        raise ConfigError(f"{f.name}={raw!r} is not valid: expected {allowed}") from None
    if kind == "float" and not math.isfinite(value):
        raise ConfigError(f"{f.name}={raw!r} is not valid: expected a finite number")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{f.name}={raw!r} is not valid: allowed are "
                          f"{', '.join(meta['choices'])}")
    if meta["min"] is not None and value < meta["min"]:
        raise ConfigError(f"{f.name}={raw!r} is not valid: must be >= {meta['min']}")
    if meta["max"] is not None and value > meta["max"]:
        raise ConfigError(f"{f.name}={raw!r} is not valid: must be <= {meta['max']}")
    return value


def likely_typos(environ: Mapping[str, str]) -> list[str]:
    """Warnings for env vars that look like a misspelt setting name."""
    warnings = []
    for name in environ:
        if name in SETTINGS or not re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", name):
            continue
        close = difflib.get_close_matches(name, SETTINGS, n=1, cutoff=0.85)
        if close:
            warnings.append(f"{name} is not a setting; did you mean {close[0]}? (ignored)")
    return warnings


def default_gdrive_path() -> str:
    return COLAB_DRIVE if os.path.isdir(os.path.dirname(COLAB_DRIVE)) else os.path.abspath("swarm_data")


def default_key_dir(environ: Mapping[str, str] = os.environ) -> str:
    return os.path.join(environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                        "rl-swarm", "keys")


def check_key_dir(values: dict) -> None:
    """KEY_DIR made absolute; ConfigError when it lies inside a local GDRIVE_PATH."""
    keys = os.path.abspath(os.path.expanduser(values["KEY_DIR"]))
    shared = values["GDRIVE_PATH"]
    if "://" not in shared and (keys + os.sep).startswith(os.path.abspath(shared) + os.sep):
        raise ConfigError(f"KEY_DIR={values['KEY_DIR']!r} is inside GDRIVE_PATH={shared!r}: a "
                          "node's private key must never be on the shared folder; use a folder "
                          "only this machine (or your private Drive) holds")
    values["KEY_DIR"] = keys


def stable_node_id(environ: Mapping[str, str] = os.environ) -> str:
    """A node id kept in ~/.config/rl-swarm/node_id, so restarts on this machine reuse it."""
    folder = os.path.join(environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                          "rl-swarm")
    path = os.path.join(folder, "node_id")
    try:
        with open(path) as fh:
            node = fh.read().strip()
        check_name("NODE_ID", node)
        return node
    except (OSError, ValueError):
        pass
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:20].strip("-")
    node = f"{host or 'node'}-{uuid.uuid4().hex[:4]}"
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w") as fh:
            fh.write(node + "\n")
    except OSError:
        pass  # read-only home: the id is still valid for this run
    return node


def load_config(environ: Mapping[str, str] = os.environ) -> tuple[Config, list[str]]:
    """(config, warnings) from the environment. Raises ConfigError."""
    values, notes = {}, likely_typos(environ)
    test_mode = _parse(SETTINGS["TEST_MODE"], environ["TEST_MODE"]) if environ.get(
        "TEST_MODE", "").strip() else False
    for name, f in SETTINGS.items():
        raw = environ.get(name)
        if raw is not None and raw.strip() != "":
            values[name] = _parse(f, raw)
        elif test_mode and f.metadata["test_mode"] is not None:
            values[name] = f.metadata["test_mode"]
    if not values.get("GDRIVE_PATH"):
        values["GDRIVE_PATH"] = default_gdrive_path()
        notes.append(f"GDRIVE_PATH not set: using {values['GDRIVE_PATH']}")
    else:
        try:
            values["GDRIVE_PATH"] = check_location(values["GDRIVE_PATH"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not values.get("NODE_ID"):
        values["NODE_ID"] = stable_node_id(environ)
    values["KEY_DIR"] = values.get("KEY_DIR") or default_key_dir(environ)
    check_key_dir(values)
    try:
        check_name("EXPERIMENT_NAME", values.get("EXPERIMENT_NAME", Config.EXPERIMENT_NAME))
        check_name("NODE_ID", values["NODE_ID"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if values.get("FAULTS"):
        try:
            parse_faults(values["FAULTS"])
        except ValueError as exc:
            raise ConfigError(f"FAULTS={values['FAULTS']!r} is not valid: {exc}") from None
    if values.get("DEVICE", "auto") != "auto" and not re.fullmatch(r"cpu|mps|cuda(:\d+)?",
                                                                    values["DEVICE"]):
        raise ConfigError(f"DEVICE={values['DEVICE']!r} is not valid: allowed are auto, cpu, "
                          "cuda, cuda:N, mps")
    if "REPORT_TO" in values:
        values["REPORT_TO"] = check_report_to(values["REPORT_TO"])
    if values.get("HUB_REPO_ID"):
        check_hub_repo(values["HUB_REPO_ID"], values)
    config = Config(**values)
    if config.ROLLOUT_CLEANUP_ENABLED and config.ROLLOUT_KEEP_LAST_N_ROUNDS <= config.MAX_STALENESS:
        raise ConfigError(f"ROLLOUT_KEEP_LAST_N_ROUNDS={config.ROLLOUT_KEEP_LAST_N_ROUNDS} must be "
                          f"> MAX_STALENESS={config.MAX_STALENESS}, or workers would look for "
                          "rounds already removed")
    return config, notes


TRACKERS = ("tensorboard", "wandb", "trackio")
HUB_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def check_report_to(raw: str) -> str:
    """REPORT_TO normalised ('none' or a comma list of TRACKERS); ConfigError otherwise."""
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    if not names or names == ["none"]:
        return "none"
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ConfigError(f"REPORT_TO={raw!r} is not valid: {', '.join(bad)} unknown; allowed are "
                          f"none or a comma-separated list of {', '.join(TRACKERS)}")
    return ",".join(dict.fromkeys(names))


def check_hub_repo(repo: str, values: Mapping[str, Any]) -> None:
    """HUB_REPO_ID must name one model repository per worker (see its help)."""
    node = values.get("NODE_ID") or "node"
    if not HUB_REPO_RE.fullmatch(repo.replace("{node}", node)):
        raise ConfigError(f"HUB_REPO_ID={repo!r} is not valid: expected user/name (letters, digits, "
                          "'.', '_', '-'; {node} is replaced by NODE_ID)")
    if (values.get("NODE_ROLE", Config.NODE_ROLE) == "swarm" and "{node}" not in repo
            and values.get("NUM_WORKERS", Config.NUM_WORKERS) > 1):
        raise ConfigError(f"HUB_REPO_ID={repo!r} would have {values.get('NUM_WORKERS', 2)} workers "
                          "push to one repository: put {node} in it, e.g. user/smollm2-swarm-{node}")


def markdown_table() -> str:
    """The README's table of settings (tests check the README against it):
    ``python -m rgym_exp.config --markdown`` prints it."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, f in SETTINGS.items():
        meta = f.metadata
        default = "(computed)" if name in ("GDRIVE_PATH", "NODE_ID", "KEY_DIR") else (
            f"`{f.default}`" if f.default != "" else "(empty)")
        text = meta["help"].rstrip(".") + "."
        text += f" One of: {', '.join(meta['choices'])}." if meta["choices"] else ""
        text += " Must match across the experiment." if meta["shared"] else ""
        text += f" TEST_MODE: {meta['test_mode']}." if meta["test_mode"] is not None else ""
        rows.append(f"| `{name}` | {default} | {text.replace('|', '/')} |")
    return "\n".join(rows)


def help_text() -> str:
    lines = ["RL Swarm settings (environment variables):", ""]
    for group in ("swarm", "learning", "storage", "outputs"):
        lines.append(f"[{group}]")
        for name, f in SETTINGS.items():
            if f.metadata["group"] != group:
                continue
            meta = f.metadata
            default = repr(f.default) if f.default != "" else "(computed)" if name in (
                "GDRIVE_PATH", "NODE_ID", "KEY_DIR") else "(empty)"
            extra = f"; one of {', '.join(meta['choices'])}" if meta["choices"] else ""
            extra += "; must match across the experiment" if meta["shared"] else ""
            lines.append(f"  {name} (default {default}): {meta['help']}{extra}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(markdown_table() if "--markdown" in sys.argv else help_text())
