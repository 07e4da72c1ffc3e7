"""The verifier sandbox: locked-down processes, limits per answer, and a pool that carries on
when one of them hangs, dies or talks nonsense."""

import json
import os
import time

import pytest

from genrl.sandbox import BOOT, SandboxError, VerifierPool, spawn
from genrl.tasks import _dataset

PROBE = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from genrl.sandbox import lock_down
lock_down(int(sys.argv[2]))
out, marker = {}, sys.argv[3]
out["uid"] = os.geteuid()
out["env"] = sorted(os.environ)
out["system"] = os.system("touch " + marker + ".system")
try:
    subprocess.run(["touch", marker + ".run"])
    out["subprocess"] = "ran"
except OSError as exc:
    out["subprocess"] = type(exc).__name__
try:
    with open(marker + ".open", "w") as fh:
        fh.write("pwned")
    out["write"] = "wrote"
except OSError as exc:
    out["write"] = type(exc).__name__
try:
    blob = bytearray(2 * 1024 ** 3)
    out["memory"] = "allocated"
except MemoryError:
    out["memory"] = "MemoryError"
print(json.dumps(out))
"""


def test_a_locked_down_process_runs_no_command_writes_nothing_and_sees_no_secret(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("HUGGINGFACE_ACCESS_TOKEN", "hf_secret")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    marker = str(tmp_path / "marker")
    proc = spawn(PROBE, "512", marker)
    out, _ = proc.communicate(timeout=60)
    got = json.loads(out)
    assert not {"HUGGINGFACE_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS",
                "AWS_SECRET_ACCESS_KEY"} & set(got["env"])
    assert got["system"] != 0 and got["subprocess"] != "ran"
    assert got["write"] != "wrote" and got["memory"] == "MemoryError"
    assert not os.path.exists(marker + ".system") and not os.path.exists(marker + ".run")
    written = marker + ".open"
    assert not os.path.exists(written) or os.path.getsize(written) == 0
    if os.geteuid() == 0:                       # root drops to nobody: not even an empty file
        assert got["uid"] == 65534 and not os.path.exists(written)


HANGS = ("print('ready', flush=True)\nimport sys, time\n"
         "for line in sys.stdin: print('entry', flush=True); time.sleep(600)\n")
DIES = ("print('ready', flush=True)\nimport sys\n"
        "sys.stdin.readline(); print('entry', flush=True); sys.exit(3)\n")
BABBLES = ("print('ready', flush=True)\nimport sys\n"
           "for line in sys.stdin: print('entry', flush=True); print('0 ok 7.5', flush=True)\n")
NEVER_READY = "import time; time.sleep(600)\n"


@pytest.mark.parametrize("boot, status", [(HANGS, "timeout"), (DIES, "died"), (BABBLES, "error")])
def test_a_verifier_that_hangs_dies_or_talks_nonsense_scores_0_and_is_replaced(boot, status):
    pool = VerifierPool(size=1, wall_s=0.5, start_s=20, boot=boot)
    try:
        t0 = time.monotonic()
        got = pool.score({"task": "x"}, ["a", "b"])
        assert [r.status for r in got] == [status, status] and all(r.score == 0.0 for r in got)
        assert time.monotonic() - t0 < 2 * 0.5 + 15     # each answer waited wall_s, no more
        assert pool.started == 3                        # the first process and two replacements
    finally:
        pool.close()


def test_a_pool_whose_processes_never_start_says_so():
    pool = VerifierPool(size=1, start_s=0.5, boot=NEVER_READY)
    try:
        with pytest.raises(SandboxError, match="do not start"):
            pool.score({"task": "x"}, ["a"])
    finally:
        pool.close()


def test_real_verifiers_score_gold_refuse_payloads_and_survive_bad_specs():
    pool = VerifierPool(size=1, boot=BOOT)
    try:
        entry = _dataset("binary_matrix", "{}", 1)[0]
        spec = {"task": "binary_matrix", "config": {}, "seed": 1, "index": 0}
        got = pool.score(spec, [entry["answer"], "__import__('os').system('id')", "1 0"])
        assert [(r.status, r.score) for r in got] == [("ok", 1.0), ("refused", 0.0), ("ok", 0.0)]
        bad = pool.score({"task": "binary_matrix", "config": {}, "seed": 1, "index": 10**9}, ["1"])
        assert [(r.status, r.score) for r in bad] == [("error", 0.0)]
        assert pool.score(spec, [entry["answer"]])[0].score == 1.0    # still serving
    finally:
        pool.close()
