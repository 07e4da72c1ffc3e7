"""Junk a careless or hostile peer could leave in a rollout folder, for tests and chaos runs.

``plant_junk(folder, count)`` writes ``count`` entries of many kinds: wrong
schema, wrong types, a huge (100 MB, sparse) file, truncated JSON, binary,
deeply nested JSON, NaN/Infinity, unicode oddities, names that look like paths,
a file that claims another node, a directory and a named pipe with rollout
names. Every entry is junk: a reader must reject each one and crash on none.
"""

from __future__ import annotations

import json
import os
import random

from genrl.rollouts import FILE_KIND, SCHEMA_VERSION

HUGE_BYTES = 100 * 1024 * 1024

# names a listing may show; none may make a reader open anything but a file in this folder
PATH_LIKE_NAMES = ["..json", "...json", "..%2f..%2fetc%2fpasswd.json", "..\\..\\evil.json",
                   "~root.json", "$HOME.json", "w2.json..", "w1\u2215..\u2215x.json",
                   "%2e%2e.json", " w2.json", "w2 .json", "w2.json ", "-rf.json", "CON.json.",
                   "w2.json\n", "w2.\u0661.json", "\u202ew2.json", "w2\u200b.json",
                   "\uff57\uff12.json", "w2\t.json", "w2 (1).json", ".w2.json.tmp-1234"]


def valid_doc(node: str, round_: int = 0) -> dict:
    return {"schema": SCHEMA_VERSION, "kind": FILE_KIND, "node_id": node, "round": round_,
            "chunk": 0, "created_at": 0.0,
            "groups": [{"model": "m", "question": "What is 2+2?", "source": {},
                        "completions": ["<answer>4</answer>", "5"], "rewards": [1.0, 0.0],
                        "ended": [True, True]}]}


def _bodies(node: str, round_: int) -> list[bytes]:
    """One example of every kind of bad content (a file named ``{node}.json``)."""
    ok = valid_doc(node, round_)

    def doc(**changes):
        d = json.loads(json.dumps(ok))
        d.update(changes)
        return json.dumps(d).encode()

    def group(**changes):
        d = json.loads(json.dumps(ok))
        d["groups"][0].update(changes)
        return json.dumps(d).encode()

    good = json.dumps(ok).encode()
    return [
        # wrong schema
        doc(schema=2), doc(kind="something-else"), b"[]", b'"text"', b"42", b"null", b"{}",
        json.dumps({k: v for k, v in ok.items() if k != "groups"}).encode(),
        # wrong types
        doc(node_id=7), doc(round="0"), doc(round=-1), doc(round=True), doc(groups={"a": 1}),
        group(completions="text"), group(completions=[]), group(completions=[1, 2]),
        group(rewards=["1", "0"]), group(rewards=[1.0]), group(ended=[1, 0]),
        group(question=["q"]), group(source=[]), group(model={"x": 1}),
        doc(groups=[None, 1, "g"]),
        # claims to be another node, or a path
        doc(node_id="somebody-else"), doc(node_id="../../etc/passwd"), doc(node_id=""),
        # truncated
        good[: len(good) // 2], good[:1], b"",
        # binary
        bytes(range(256)), b"\x00" * 4096, b"\xff\xfe" + "{}".encode("utf-16-le"),
        os.urandom(2048),
        # deeply nested
        b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        doc(groups=[{"source": json.loads("[" * 500 + "]" * 500)}]),
        # NaN / Infinity
        good.replace(b"1.0", b"NaN"), good.replace(b"1.0", b"Infinity"),
        good.replace(b"1.0", b"-Infinity"), good.replace(b"1.0", b"1e999"),
        # unicode oddities
        good.replace(b"What", b"\\ud800What"), good.replace(b"What", b"\xc0\xafWhat"),
        b"\xef\xbb\xbf" + good, good.replace(node.encode(), node.encode() + b"\\u202e"),
        group(completions=["a" * 40_000, "b"]),
        # over the caps
        doc(groups=ok["groups"] * 300), group(completions=["x"] * 65, rewards=[0.0] * 65,
                                               ended=[True] * 65),
    ]


def plant_junk(folder: str, count: int = 1000, round_: int = 0, huge: bool = True,
               seed: int = 0) -> dict[str, int]:
    """Write ``count`` junk entries into ``folder``; returns how many of each kind."""
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    kinds: dict[str, int] = {}

    def put(name: str, data: bytes, kind: str) -> None:
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
        kinds[kind] = kinds.get(kind, 0) + 1

    if huge:  # a sparse 100 MB file with a rollout name: made in no time, never read whole
        with open(os.path.join(folder, "huge-peer.json"), "wb") as fh:
            fh.write(json.dumps(valid_doc("huge-peer", round_)).encode())
            fh.truncate(HUGE_BYTES)
        kinds["huge"] = 1
    os.mkdir(os.path.join(folder, "dir-peer.json"))
    kinds["directory"] = 1
    try:
        os.mkfifo(os.path.join(folder, "pipe-peer.json"))
        kinds["named pipe"] = 1
    except (AttributeError, OSError):
        pass
    for name in PATH_LIKE_NAMES:
        put(name, json.dumps(valid_doc("w2", round_)).encode(), "path-like name")
    bodies = _bodies("placeholder", round_)
    k = 0
    while sum(kinds.values()) < count:
        node = f"junk-{k}"
        body = bodies[k % len(bodies)].replace(b"placeholder", node.encode())
        if rng.random() < 0.1:    # some in chunk-file form, some with other names
            put(f"{node}.{rng.randrange(100)}.json", body, "bad content")
        elif rng.random() < 0.1:
            put(f"{node}.txt", body, "not a rollout name")
        else:
            put(f"{node}.json", body, "bad content")
        k += 1
    return kinds
