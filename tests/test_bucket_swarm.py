"""The swarm on an S3 bucket end to end: GDRIVE_PATH=s3://bucket/swarm, AWS_ENDPOINT_URL at
an S3-compatible server process (moto), real launcher processes, a tiny model.

It must finish its rounds with the folder layout it has on Drive (the bucket is copied
to a local folder and checked like one), write no temporary objects (one PUT per file),
and the status and report tools must read the same bucket.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.s3_server import count_requests, new_bucket, request_log, s3_endpoint, s3_env
from tests.swarm_helpers import check_folder, node_env, start_node, wait_all

ROUNDS = 3
REQUESTS_REPORT = "/tmp/rl-swarm-bucket-requests.txt"
TOP = {"experiment.json", "state", "peers", "keys", "rollouts", "submissions", "checkpoints", "logs"}


@pytest.fixture(scope="module")
def bucket_swarm(tiny_llama, tmp_path_factory):
    """A coordinator and two workers for 3 rounds on a fresh bucket; the bucket copied to
    a local folder afterwards."""
    import s3fs
    root = tmp_path_factory.mktemp("bucket")
    endpoint = s3_endpoint()
    url = f"s3://{new_bucket(endpoint)}/swarm"
    aws = s3_env(endpoint)
    env = node_env(url, tiny_llama, str(root / "home"), MAX_ROUNDS=ROUNDS, **aws)
    log_start = os.path.getsize(request_log())
    procs = [start_node(env, str(root / f"{n}.log"), role, n)
             for role, n in (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))]
    codes = wait_all(procs, timeout=300)
    with open(request_log(), errors="replace") as fh:
        fh.seek(log_start)
        requests = count_requests(fh.readlines(), url[len("s3://"):])
    logs = {n: (root / f"{n}.log").read_text(errors="replace") for n in ("coord", "w1", "w2")}
    fs = s3fs.S3FileSystem(key=aws["AWS_ACCESS_KEY_ID"], secret=aws["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=endpoint, skip_instance_cache=True)
    prefix = url[len("s3://"):]
    keys = [k[len(prefix) + 1:] for k in fs.find(prefix)]
    local = root / "copy"
    for key in keys:
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(fs.cat_file(f"{prefix}/{key}"))
    return dict(url=url, aws=aws, codes=codes, logs=logs, keys=keys, local=str(local),
                root=root, requests=requests, env=env)


def test_the_bucket_swarm_finishes_every_round(bucket_swarm):
    s = bucket_swarm
    assert s["codes"] == [0, 0, 0], {n: text[-3000:] for n, text in s["logs"].items()}
    for name, text in s["logs"].items():
        assert "Traceback" not in text, name
        assert f"in bucket {s['url']}" in text or name != "coord"  # it said where it works
    exp = os.path.join(s["local"], "experiments", "exp")
    state = json.load(open(os.path.join(exp, "state", "current_state.json")))
    assert state["finished"] and state["round"] == ROUNDS - 1
    for node in ("w1", "w2"):
        lines = [json.loads(x) for x in open(os.path.join(exp, "logs", node, "metrics.jsonl"))]
        assert [m["round"] for m in lines] == list(range(ROUNDS))
        # each found the other's rollouts in the bucket's listing of a round
        listed = [int(n) for n in re.findall(r"(\d+) peer file\(s\) listed", s["logs"][node])]
        assert listed and max(listed) >= 1, s["logs"][node][-2000:]


def test_the_bucket_holds_the_drive_layout_whole_with_no_temporary_objects(bucket_swarm):
    s = bucket_swarm
    exp = os.path.join(s["local"], "experiments", "exp")
    assert set(os.listdir(exp)) <= TOP | {".claims"} and {"experiment.json", "state", "peers", "rollouts",
                                             "submissions", "logs"} <= set(os.listdir(exp))
    for r in range(ROUNDS):
        subs = sorted(os.listdir(os.path.join(exp, "submissions", f"round_{r}")))
        assert subs == ["w1.json", "w2.json"]
        writers = {name.split(".")[0] for name in os.listdir(os.path.join(exp, "rollouts",
                                                                          f"round_{r}"))}
        assert writers == {"w1", "w2"}
    assert sorted(os.listdir(os.path.join(exp, "peers"))) == ["coord.json", "w1.json", "w2.json"]
    assert sorted(os.listdir(os.path.join(exp, ".claims"))) == ["coord.0", "w1.0", "w2.0"]
    assert check_folder(s["local"]) == []   # every file parses and validates
    assert not [k for k in s["keys"] if ".tmp-" in k or k.endswith(".part")], s["keys"]


def test_status_and_report_read_the_same_bucket(bucket_swarm, monkeypatch, capsys, tmp_path):
    from rgym_exp.report import main as report
    from rgym_exp.status import main as status
    s = bucket_swarm
    for key, value in s["aws"].items():
        monkeypatch.setenv(key, value)
    assert status(["--gdrive-path", s["url"], "--experiment", "exp"]) == 0
    out = capsys.readouterr().out
    assert all(node in out for node in ("coord", "w1", "w2")) and "finished" in out, out
    assert report(["--gdrive-path", s["url"], "--experiment", "exp", "--out",
                   str(tmp_path / "report")]) == 0
    made = os.listdir(tmp_path / "report")
    assert "reward_per_round.png" in made, made
    assert status(["--gdrive-path", s["url"], "--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_requests_per_round_are_counted_and_bounded(bucket_swarm):
    """The S3 requests of the whole swarm (coordinator + 2 workers) per round, from the
    server's access log; written to REQUESTS_REPORT for docs/OBJECT_STORES.md."""
    s, env = bucket_swarm, bucket_swarm["env"]
    kind, area = s["requests"]["kind"], s["requests"]["area"]
    total = sum(kind.values())
    report = (f"S3 requests per round, whole swarm (coordinator + 2 workers, {ROUNDS} rounds, "
              f"HEARTBEAT_INTERVAL={env['HEARTBEAT_INTERVAL']}s POLL_INTERVAL="
              f"{env['POLL_INTERVAL']}s LOG_FLUSH_INTERVAL={env['LOG_FLUSH_INTERVAL']}s, J=2): "
              f"{total / ROUNDS:.1f} in all; by kind "
              + ", ".join(f"{k} {v / ROUNDS:.1f}" for k, v in sorted(kind.items()))
              + "; by area " + ", ".join(f"{k} {v / ROUNDS:.1f}" for k, v in sorted(area.items())))
    with open(REQUESTS_REPORT, "w") as fh:
        fh.write(report + "\n")
    print("\n" + report)
    assert kind.get("PUT", 0) >= 2 * ROUNDS * 2  # each worker: a rollout and a submission a round
    assert area.get("rollouts", 0) > 0 and area.get("submissions", 0) > 0, report
