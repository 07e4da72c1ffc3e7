"""`python -m rgym_exp.doctor`: one line per check, exit 0 on a good setup, exit 1 with a
one-line fix on an error; the launcher stops on the quick checks' errors in seconds.
(The doctor against an existing experiment.json: tests/test_takehome.py.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from rgym_exp.doctor import run_checks
from tests.swarm_helpers import REPO, node_env, start_node

ALL = ["python", "packages", "settings", "extras", "folder", "folder", "cache", "keys", "model",
       "device", "clock", "experiment"]


@pytest.fixture
def env(tiny_llama, tmp_path) -> dict:
    return node_env(str(tmp_path / "drive"), tiny_llama, str(tmp_path / "home"),
                    NODE_ROLE="worker", NODE_ID="w1")


def doctor(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rgym_exp.doctor", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_a_good_setup_is_all_ok_and_exit_0(env):
    done = doctor(env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ALL
    assert all(line.startswith("ok ") for line in lines[:-1]), lines
    assert lines[-1].startswith(f"{len(ALL)} ok, 0 warning(s), 0 error(s) in ")


def test_an_unwritable_folder_is_one_error_line_with_its_fix_and_exit_1(env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = doctor(dict(env, GDRIVE_PATH=str(blocker / "drive")))
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("error")]
    assert errors == [f"error    folder      GDRIVE_PATH={blocker}/drive: {blocker} is a file, "
                      "not a folder -> choose a folder you can write"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_an_error(env, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    check = by_name(run_checks(dict(env, GDRIVE_PATH=str(folder))))["folder"]
    assert check.level == "error" and "cannot write" in check.message and check.fix


def test_a_missing_tracker_names_report_to_and_the_extra(env, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    check = by_name(run_checks(dict(env, REPORT_TO="tensorboard"), quick=True))["extras"]
    assert check.level == "error"
    assert check.message == ("REPORT_TO=tensorboard needs the tensorboardX package: pip install "
                             ".[tensorboard] (or pip install tensorboardX)")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_the_launcher_stops_in_seconds_on_a_missing_tracker(env, tmp_path):
    proc = start_node(dict(env, REPORT_TO="tensorboard,wandb"), str(tmp_path / "w.log"),
                      "worker", "w1")
    assert proc.wait(timeout=120) == 2
    log = open(tmp_path / "w.log").read()
    assert "doctor: error    extras      REPORT_TO=tensorboard,wandb needs the wandb package: " \
           "pip install .[wandb]" in log
    assert "joining experiment" not in log and "loaded in" not in log    # before the model


@pytest.mark.parametrize("setting, value, name, says", [
    ("MODEL_NAME", "/no/such/model", "model", "MODEL_NAME=/no/such/model: no such folder"),
    ("MODEL_NAME", "/no/such/model.gguf", "model", "no such file"),
    ("GDRIVE_PATH", "/content/drive/MyDrive/swarm", "folder", "Google Drive is not mounted"),
    ("GDRIVE_PATH", "gdrive://abc", "folder", "credentials file /no/creds.json does not exist"),
    ("REPORT_TO", "tensorbord", "settings", "REPORT_TO='tensorbord' is not valid")])
def test_each_broken_setting_is_an_error_naming_it(env, setting, value, name, says):
    if os.path.isdir("/content/drive/MyDrive") and name == "folder":
        pytest.skip("a Drive is mounted here")
    checks = run_checks(dict(env, **{setting: value}, GDRIVE_CREDENTIALS="/no/creds.json"))
    check = by_name(checks)[name]
    assert check.level == "error" and says in check.message, check.line()


def test_a_hub_repository_without_a_token_is_a_warning_not_an_error(env):
    check = by_name(run_checks(dict(env, HUB_REPO_ID="user/model"), quick=True))["hub"]
    assert check.level == "warning" and "HUGGINGFACE_ACCESS_TOKEN is empty" in check.message


def test_the_quick_checks_import_no_torch(env):
    code = ("import sys; from rgym_exp.doctor import run_checks; "
            "checks = run_checks(quick=True); print(sorted({c.level for c in checks}), "
            "'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "['ok'] False", done.stdout + done.stderr
