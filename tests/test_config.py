"""Configuration: every env var in one place, clear errors, sane computed defaults."""

import os
import subprocess
import sys

import pytest

from rgym_exp.config import SETTINGS, Config, ConfigError, help_text, likely_typos, load_config
from tests.swarm_helpers import REPO

REFERENCE_NAMES = ["GDRIVE_PATH", "EXPERIMENT_NAME", "NODE_ROLE", "NODE_ID", "MODEL_NAME", "SEED",
                   "NUM_TRAIN_SAMPLES", "NUM_TRANSPLANT_TREES", "NUM_GENERATIONS", "MAX_ROUNDS",
                   "CHECKPOINT_INTERVAL", "ROLLOUT_PUBLISH_FREQUENCY", "ROLLOUT_CLEANUP_ENABLED",
                   "ROLLOUT_KEEP_LAST_N_ROUNDS", "ROLLOUT_ARCHIVE_OLD", "LOG_FLUSH_INTERVAL",
                   "COORDINATOR_ROUND_INTERVAL", "TEST_MODE", "HUGGINGFACE_ACCESS_TOKEN",
                   "ROUND_TIMEOUT", "NUM_WORKERS", "LEARNING_RATE", "MAX_NEW_TOKENS", "TEMPERATURE",
                   "BETA", "TASKS"]


def env(tmp_path, **kw):
    base = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "GDRIVE_PATH": str(tmp_path / "drive")}
    base.update({k: str(v) for k, v in kw.items()})
    return base


def test_every_reference_setting_exists_with_help():
    for name in REFERENCE_NAMES:
        assert name in SETTINGS and len(SETTINGS[name].metadata["help"]) > 10, name


def test_defaults_follow_the_paper_and_the_reference(tmp_path):
    cfg, _ = load_config(env(tmp_path))
    assert cfg.MODEL_NAME == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (cfg.NUM_TRAIN_SAMPLES, cfg.NUM_TRANSPLANT_TREES, cfg.NUM_GENERATIONS) == (4, 4, 8)
    assert cfg.BETA == 0.0 and (cfg.EPSILON_LOW, cfg.EPSILON_HIGH) == (0.2, 0.28)
    assert cfg.NODE_ROLE == "swarm"


@pytest.mark.parametrize("name, value, message", [
    ("NUM_GENERATIONS", "1", "NUM_GENERATIONS='1' is not valid: must be >= 2"),
    ("MAX_ROUNDS", "ten", "MAX_ROUNDS='ten' is not valid: expected an int"),
    ("NODE_ROLE", "boss", "allowed are swarm, coordinator, worker"),
    ("ROLLOUT_PUBLISH_FREQUENCY", "hourly", "allowed are round, stage, generation"),
    ("ROLLOUT_CLEANUP_ENABLED", "maybe", "expected true or false"),
    ("TEMPERATURE", "nan", "finite"),
    ("QUORUM", "1.5", "must be <= 1.0"),
    ("DEVICE", "tpu", "DEVICE='tpu' is not valid"),
    ("NODE_ID", "../evil", "NODE_ID='../evil' is not allowed"),
    ("NODE_ID", "a/b", "is not allowed"),
    ("NODE_ID", "has space", "is not allowed"),
    ("EXPERIMENT_NAME", "..", "EXPERIMENT_NAME='..' is not allowed"),
    ("EXPERIMENT_NAME", "x" * 65, "is not allowed"),
])
def test_invalid_values_name_the_variable_the_value_and_what_is_allowed(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(env(tmp_path, **{name: value}))


def test_booleans_accept_the_reference_spelling(tmp_path):
    cfg, _ = load_config(env(tmp_path, ROLLOUT_CLEANUP_ENABLED="False", ROLLOUT_ARCHIVE_OLD="True"))
    assert cfg.ROLLOUT_CLEANUP_ENABLED is False and cfg.ROLLOUT_ARCHIVE_OLD is True


def test_test_mode_lowers_defaults_but_explicit_values_win(tmp_path):
    cfg, _ = load_config(env(tmp_path, TEST_MODE="true", NUM_GENERATIONS="6"))
    assert cfg.MAX_ROUNDS == 3 and cfg.NUM_TRAIN_SAMPLES == 2 and cfg.NUM_GENERATIONS == 6


def test_likely_typos_are_warned_about():
    warnings = likely_typos({"NUM_GENERATION": "4", "PATH": "/bin", "MAX_ROUND": "3"})
    assert any("NUM_GENERATION is not a setting; did you mean NUM_GENERATIONS" in w for w in warnings)
    assert any("MAX_ROUNDS" in w for w in warnings) and not any("PATH" in w for w in warnings)


def test_node_id_is_stable_across_restarts_on_one_machine(tmp_path):
    first, _ = load_config(env(tmp_path))
    second, _ = load_config(env(tmp_path))
    assert first.NODE_ID == second.NODE_ID
    other, _ = load_config(env(tmp_path / "elsewhere"))
    assert other.NODE_ID != first.NODE_ID


def test_gdrive_path_defaults_to_a_local_folder_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, notes = load_config({"XDG_CONFIG_HOME": str(tmp_path)})
    assert cfg.GDRIVE_PATH == str(tmp_path / "swarm_data")
    assert any("GDRIVE_PATH not set: using" in n for n in notes)


def test_cleanup_must_keep_the_rounds_workers_still_read(tmp_path):
    with pytest.raises(ConfigError, match="ROLLOUT_KEEP_LAST_N_ROUNDS=2 must be > MAX_STALENESS=2"):
        load_config(env(tmp_path, ROLLOUT_KEEP_LAST_N_ROUNDS=2, MAX_STALENESS=2))


def test_secrets_are_masked_in_the_logged_configuration(tmp_path):
    cfg, _ = load_config(env(tmp_path, HUGGINGFACE_ACCESS_TOKEN="hf_secret"))
    assert cfg.effective()["HUGGINGFACE_ACCESS_TOKEN"] == "***"
    assert "hf_secret" not in str(cfg.effective(changed_only=True))


def run_launcher(environ, *args):
    return subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher", *args],
                          env={**os.environ, "PYTHONPATH": REPO, **environ}, capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def test_launcher_exits_2_with_one_clear_message_on_a_bad_value(tmp_path):
    out = run_launcher(env(tmp_path, NUM_TRAIN_SAMPLES="-3"))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: NUM_TRAIN_SAMPLES='-3' is not valid: must be >= 1"


def test_launcher_rejects_an_unknown_task_before_starting_nodes(tmp_path):
    out = run_launcher(env(tmp_path, TASKS="basic_arithmetc", HOME=str(tmp_path)))
    assert out.returncode == 2 and "did you mean basic_arithmetic" in out.stderr


def test_help_lists_every_variable_with_its_default(tmp_path):
    out = run_launcher({}, "--help")
    assert out.returncode == 0
    for name, f in SETTINGS.items():
        assert f"  {name} (default " in out.stdout, name
    assert help_text() in out.stdout


def test_config_is_a_frozen_dataclass():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.SEED = 3


def test_readme_lists_every_setting_as_config_py_defines_it():
    from rgym_exp.config import markdown_table
    readme = open(os.path.join(REPO, "README.md")).read()
    start = readme.index("<!-- settings:start")
    table = readme[readme.index("\n", start) + 1: readme.index("<!-- settings:end -->")].strip()
    assert table == markdown_table(), "regenerate with: python -m rgym_exp.config --markdown"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = open(os.path.join(REPO, "README.md")).read().splitlines()
    assert lines[2] == "```bash" and lines[5] == "```"
    main_job, tests = lines[3], lines[4]
    assert main_job.endswith("python -m rgym_exp.runner.swarm_launcher")
    assert tests.endswith("python -m pytest -q")
    ci = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    assert tests in ci


URLS_REFUSED = ["http://example.com/swarm", "gdrive:/x", "Gdrive://x", "GS://bucket", "s3:bucket/x",
                "az://container/x", "ftp://host/x"]


@pytest.mark.parametrize("value", URLS_REFUSED)
def test_a_url_that_is_no_supported_store_is_refused_naming_the_value_and_the_forms(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_config(env(tmp_path, GDRIVE_PATH=value))
    message = str(err.value)
    assert f"GDRIVE_PATH={value!r} is not a supported location" in message
    assert "a directory path" in message and all(f"{s}://" in message for s in ("gdrive", "gs", "s3"))
    if value.lower().startswith("gdrive"):
        assert "did you mean gdrive://x?" in message
    if value == "GS://bucket":
        assert "did you mean gs://bucket?" in message


@pytest.mark.parametrize("value, why", [("memory://x", "cannot hold a swarm"),
                                        ("s3://", "names no folder or bucket"),
                                        ("gs:///", "names no folder or bucket")])
def test_a_store_no_swarm_can_share_is_refused_saying_why(tmp_path, value, why):
    with pytest.raises(ConfigError, match=why):
        load_config(env(tmp_path, GDRIVE_PATH=value))


@pytest.mark.parametrize("value", ["http://example.com/s", "gdrive:/x", "Gdrive://x", "s3:bucket/x"])
def test_the_launcher_exits_2_on_such_a_url_and_creates_nothing_on_disk(tmp_path, value):
    work = tmp_path / "cwd"
    work.mkdir()
    out = subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"],
                         env={**os.environ, "PYTHONPATH": REPO, "HOME": str(tmp_path / "home"),
                              "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "GDRIVE_PATH": value,
                              "NODE_ID": "n1", "MAX_ROUNDS": "1"},
                         capture_output=True, text=True, timeout=120, cwd=work)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and value in lines[0] and "not a supported location" in lines[0]
    assert list(work.iterdir()) == [] and not (tmp_path / "home").exists()


def test_plain_paths_drive_and_bucket_urls_are_accepted_and_routed_to_their_store(tmp_path):
    from rgym_exp.drive.backends import BACKENDS, url_scheme
    for url, store in [("gdrive://1AbCdEf", "DriveApiStore"), ("gs://bucket/swarm", "FsspecStore"),
                       ("s3://bucket/swarm", "FsspecStore"), ("gcs://bucket", "FsspecStore")]:
        cfg, _ = load_config(env(tmp_path, GDRIVE_PATH=url))
        assert cfg.GDRIVE_PATH == url and BACKENDS[url_scheme(url)].endswith(f":{store}")
    cfg, _ = load_config(env(tmp_path, GDRIVE_PATH=str(tmp_path / "a:b")))   # a colon in a name
    assert cfg.GDRIVE_PATH == str(tmp_path / "a:b")


@pytest.mark.parametrize("raw, normal", [("none", "none"), ("", "none"),
                                         ("TensorBoard, wandb", "tensorboard,wandb"),
                                         ("trackio,trackio", "trackio")])
def test_report_to_is_a_comma_list_of_trackers(tmp_path, raw, normal):
    assert load_config(env(tmp_path, REPORT_TO=raw))[0].REPORT_TO == normal


@pytest.mark.parametrize("name, value, message", [
    ("REPORT_TO", "tensorboard,mlflow", "REPORT_TO='tensorboard,mlflow' is not valid: mlflow "
     "unknown; allowed are none or a comma-separated list of tensorboard, wandb, trackio"),
    ("HUB_REPO_ID", "just-a-name", "HUB_REPO_ID='just-a-name' is not valid: expected user/name"),
    ("HUB_REPO_ID", "user/a b", "HUB_REPO_ID='user/a b' is not valid"),
    ("HUB_REPO_ID", "user/swarm", "HUB_REPO_ID='user/swarm' would have 2 workers push to one "
     "repository: put {node} in it")])
def test_takehome_settings_refuse_bad_values_naming_the_setting(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as err:
        load_config(env(tmp_path, **{name: value}))
    assert message in str(err.value)


def test_one_worker_may_push_to_a_plain_repository_and_node_fills_in_the_node_id(tmp_path):
    assert load_config(env(tmp_path, HUB_REPO_ID="user/swarm", NODE_ROLE="worker"))[0]
    cfg, _ = load_config(env(tmp_path, HUB_REPO_ID="user/swarm-{node}", NODE_ID="my-laptop"))
    assert cfg.HUB_REPO_ID == "user/swarm-{node}"


def test_the_default_mix_is_the_paper_s_nine_and_a_chain_sum_warm_up_and_paper_is_the_nine(tmp_path):
    from genrl.tasks import PAPER_TASKS
    from rgym_exp.experiment import question_source
    names = lambda extra: [t.name for t in question_source(load_config({**env(tmp_path), **extra})[0]).tasks]
    assert names({}) == list(PAPER_TASKS) + ["chain_sum"]
    assert names({"TASKS": ""}) == names({})              # empty: the default
    assert names({"TASKS": "paper"}) == list(PAPER_TASKS)
    assert len(PAPER_TASKS) == 9
