"""Signed files for tests (rgym_exp/trust.py): one key pair per node name for the whole
session, and records written as that node would sign them.

    exp = node_exp(store)                      # an experiment as node "me" sees it
    write_as(store, "w1", layout.peer("w1"), PeerRecord(...))    # signed by w1
    register(exp, "p1")                        # p1's key registered and its peer record, the
    #                                            key known to exp
"""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

from rgym_exp.drive.layout import Layout
from rgym_exp.records import ExperimentInfo, PeerRecord, RecordReader, to_json
from rgym_exp.trust import Keys, Trust

_KEYS: dict[str, Keys] = {}


def keys(node: str) -> Keys:
    """The session's key pair of node ``node``."""
    if node not in _KEYS:
        _KEYS[node] = Keys.generate()
    return _KEYS[node]


def signer(store, node: str) -> Trust:
    """A Trust that signs as ``node`` (its session key)."""
    return Trust(store, keys(node), node)


def body(record) -> bytes:
    return record if isinstance(record, bytes) else (
        json.dumps(record).encode() if isinstance(record, dict) else to_json(record))


def write_as(store, node: str, path: str, record) -> bytes:
    """Write ``record`` (a record, dict or JSON bytes) at ``path`` signed by ``node``;
    returns the sealed bytes. A peer record comes with ``node``'s key registration in
    keys/ (as a worker's first start writes it)."""
    trust = signer(store, node)
    if "/peers/" in path:
        trust.register(path.split("/peers/")[0])
    sealed = trust.seal(path, body(record))
    store.write(path, sealed)
    return sealed


def node_exp(store, node: str = "me", layout: Layout | None = None, info=None):
    """What an Experiment gives the modules of node ``node``: store, layout, a reader that
    verifies, and its trust (signing as ``node``)."""
    trust = signer(store, node)
    return SimpleNamespace(store=store, layout=layout or Layout("exp"), info=info,
                           reader=RecordReader(store, trust), trust=trust)


def register(exp, node: str, **fields) -> bytes:
    """``node``'s key registration and signed peer record in ``exp``'s folder, its key known
    to ``exp``'s trust (as if read before): later reads of its files cost no lookup."""
    path = exp.layout.peer(node)
    record = PeerRecord(**{"node_id": node, "role": "worker", "session": "s-" + node,
                           "beat": 1, "status": "running", **fields})
    store = getattr(exp.store, "inner", exp.store)
    trust = signer(store, node)
    trust.register(exp.layout.root)
    sealed = trust.seal(path, to_json(record))
    store.write(path, sealed)
    exp.trust._learn(exp.layout.root, node, keys(node).public)
    return sealed


def pin(store, layout: Layout, coordinator: str = "coord", **fields) -> ExperimentInfo:
    """experiment.json signed by ``coordinator``, pinning its session key."""
    info = ExperimentInfo(name=layout.experiment, protocol=3, created_at=0.0, shared={},
                          questions={}, max_rounds=10, coordinator=coordinator,
                          coordinator_key=keys(coordinator).public, **fields)
    write_as(store, coordinator, layout.experiment_file, asdict(info))
    return info
