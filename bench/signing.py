"""What signed records cost (issue 20, rgym_exp/trust.py): milliseconds to sign and verify
per round for one worker, and bytes added per file, measured on the records a round writes
and reads, side by side with parsing the same files as JSON.

    python bench/signing.py            # the default round shape (I=2, J=2, G=4, 5 peers)
    python bench/signing.py --peers 20 --heartbeats 120

A worker's round, as counted here: it signs one rollout file, one submission, one
checkpoint manifest and a peer record per heartbeat; it verifies the state file (a few
polls), its peers' rollout files and, for the coordinator, every worker's submission and
peer record (``--peers``). Keys are looked up once per node and then cached, so lookups
are not a per-round cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from genrl.rollouts import RolloutGroup, encode_rollouts  # noqa: E402
from rgym_exp.drive.layout import Layout  # noqa: E402
from rgym_exp.drive.store import FolderStore  # noqa: E402
from rgym_exp.records import PeerRecord, RoundState, Submission, to_json  # noqa: E402
from rgym_exp.trust import Keys, Trust  # noqa: E402


def rollout_body(node: str, groups: int, generations: int, chars: int) -> bytes:
    text = ("Let me add the numbers step by step. " * (chars // 37 + 1))[:chars]
    return encode_rollouts([RolloutGroup(node, 3, "m", f"What is {k} + {k}?", {"task": "t"},
                                         [text + f"<answer>{2 * k}</answer>"] * generations,
                                         [1.0, 0.0] * (generations // 2))
                            for k in range(groups)], node, 3)


def timed(fn, repeat: int) -> float:
    """Seconds per call, the best of three batches of ``repeat``."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=2, help="I: groups per rollout file")
    parser.add_argument("--generations", type=int, default=4, help="G: completions per group")
    parser.add_argument("--chars", type=int, default=1200, help="characters per completion")
    parser.add_argument("--peers", type=int, default=5, help="peers whose files one round reads")
    parser.add_argument("--heartbeats", type=int, default=60, help="peer-record writes per round")
    args = parser.parse_args(argv)

    layout = Layout("exp")
    store = FolderStore(tempfile.mkdtemp(prefix="rl-swarm-signing-"))
    coord, me = Trust(store, Keys.generate(), "coord"), Trust(store, Keys.generate(), "w1")
    peers = [Trust(store, Keys.generate(), f"p{k}") for k in range(args.peers)]
    info = json.dumps({"name": "exp", "coordinator": "coord",
                       "coordinator_key": coord.keys.public}).encode()
    store.write(layout.experiment_file, coord.seal(layout.experiment_file, info))
    reader = Trust(store, me.keys, "w1")
    reader.open(layout.experiment_file, store.read(layout.experiment_file, 1 << 20))
    for peer in peers:
        peer.register(layout.root)
        reader.node_key(layout.root, peer.node) or reader._fetch_node(layout.root, peer.node)

    files = {   # name: (path, body, signer, how many a round signs, how many it verifies)
        "rollout file": (layout.rollout(3, "w1", None, 1),
                         rollout_body("w1", args.groups, args.generations, args.chars), me, 1, 0),
        "peer rollout file": (layout.rollout(3, "p0", None, 1),
                              rollout_body("p0", args.groups, args.generations, args.chars),
                              peers[0], 0, args.peers),
        "submission": (layout.submission(3, "w1"), to_json(Submission(
            round=3, node_id="w1", metrics={f"m/{k}": 0.5 for k in range(40)})), me, 1, 0),
        "peer record": (layout.peer("w1"), to_json(PeerRecord(
            "w1", "worker", "s" * 32, 1234, "running", host="host", pid=4321, phase="train",
            used_from={f"p{k}": [12, 34] for k in range(args.peers)})), me, args.heartbeats,
            args.peers),
        "state file": (layout.state_file, to_json(RoundState(
            round=3, started_at=1.0, deadline=2.0, max_rounds=20)), coord, 0, 10),
    }
    total_sign = total_verify = total_parse = 0.0
    print(f"signing: I={args.groups}, G={args.generations}, {args.chars} chars a completion, "
          f"{args.peers} peers, {args.heartbeats} heartbeats a round")
    print(f"{'file':<18} {'bytes':>7} {'+bytes':>6} {'sign ms':>8} {'verify ms':>9} "
          f"{'parse ms':>8}  per round: signed, verified")
    for name, (path, body, trust, signs, verifies) in files.items():
        sealed = trust.seal(path, body)
        sign_s = timed(lambda: trust.seal(path, body), 200)
        verify_s = timed(lambda: reader.open(path, sealed), 200)
        parse_s = timed(lambda: json.loads(sealed), 200)
        total_sign += signs * sign_s
        total_verify += verifies * verify_s
        total_parse += (signs + verifies) * parse_s
        print(f"{name:<18} {len(body):>7} {len(sealed) - len(body):>6} {sign_s * 1e3:>8.3f} "
              f"{verify_s * 1e3:>9.3f} {parse_s * 1e3:>8.3f}  {signs}, {verifies}")
    print(f"signing: {total_sign * 1e3:.1f} ms signing + {total_verify * 1e3:.1f} ms verifying "
          f"per round; parsing the same files as JSON {total_parse * 1e3:.1f} ms: "
          f"ratio {(total_sign + total_verify) / max(total_parse, 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
