"""RolloutGroup codec and the validation of untrusted peer files."""

import json

import pytest

from genrl.rollouts import Limits, RolloutGroup, decode_rollouts, encode_rollouts


def group(**kw):
    base = dict(node_id="peer-1", round=4, model="m", question="What is 2+2?",
                source={"kind": "reasoning_gym", "task": "basic_arithmetic", "config": {},
                        "seed": 1, "size": 10, "index": 3},
                completions=["<answer>4</answer>", "5"], rewards=[1.0, 0.0], ended=[True, False])
    base.update(kw)
    return RolloutGroup(**base)


def doc(groups=None, **kw):
    d = json.loads(encode_rollouts([group()] if groups is None else groups, "peer-1", 4))
    d.update(kw)
    return d


def raw(d) -> bytes:
    return json.dumps(d).encode()


def test_roundtrip_keeps_every_field():
    g = group(completions=["ünïcødé ✓\n\t", ""], rewards=[0.5, 1.0])
    out, reasons = decode_rollouts(encode_rollouts([g], "peer-1", 4), expected_node="peer-1")
    assert reasons == [] and out == [g]


def test_ended_defaults_to_true_for_older_senders():
    d = doc()
    del d["groups"][0]["ended"]
    out, _ = decode_rollouts(raw(d))
    assert out[0].ended == [True, True]


def _with_group(**changes):
    d = doc()
    d["groups"][0].update(changes)
    return raw(d)


MALFORMED = {
    "not json": (b"{this is not json", "not valid JSON"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "nan": (b'{"schema": 1, "x": NaN}', "NaN is not allowed"),
    "infinity": (b'{"schema": 1, "x": -Infinity}', "Infinity is not allowed"),
    "top-level list": (b"[1, 2, 3]", "not a rollout file"),
    "wrong kind": (raw(doc(kind="other")), "not a rollout file"),
    "future schema": (raw(doc(schema=99)), "schema 99"),
    "node id path": (raw(doc(node_id="../etc")), "node_id"),
    "node id newline": (raw(doc(node_id="peer-1\n")), "node_id"),
    "someone else's name": (raw(doc(node_id="peer-2")), "claims to be from peer-2"),
    "negative round": (raw(doc(round=-1)), "round"),
    "round as text": (raw(doc(round="4")), "round"),
    "groups missing": (raw({**doc(), "groups": None}), "groups missing"),
    "deep nesting": (b'{"a":' * 100000 + b"1" + b"}" * 100000, "nested too deeply"),
    "truncated": (encode_rollouts([group()], "peer-1", 4)[:-10], "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_are_rejected_with_a_reason(name):
    data, reason = MALFORMED[name]
    groups, reasons = decode_rollouts(data, expected_node="peer-1")
    assert groups == [] and len(reasons) == 1 and reason in reasons[0]


BAD_GROUPS = {
    "group not an object": ("x", "not an object"),
    "no completions": ({"completions": []}, "completions missing"),
    "completion not text": ({"completions": [1, 2]}, "not text"),
    "rewards length": ({"rewards": [1.0]}, "one finite number per completion"),
    "reward is text": ({"rewards": ["1", 0.0]}, "one finite number"),
    "reward is bool": ({"rewards": [True, 0.0]}, "one finite number"),
    "overflowing reward": ({"rewards": [12345.5, 0.0]}, "one finite number"),
    "ended wrong": ({"ended": [1, 0]}, "ended"),
    "question missing": ({"question": None}, "question is NoneType"),
    "source not object": ({"source": [1]}, "source is not an object"),
    "source huge": ({"source": {"k": "x" * 5000}}, "source metadata"),
    "lone surrogate": ({"completions": ["\ud800", "ok"]}, "invalid unicode"),
    "completion too long": ({"completions": ["x" * 40_000, "y"]}, "over the cap"),
    "model too long": ({"model": "m" * 500}, "over the cap"),
}


@pytest.mark.parametrize("name", sorted(BAD_GROUPS))
def test_bad_groups_are_dropped_with_a_reason_and_the_rest_kept(name):
    change, reason = BAD_GROUPS[name]
    d = doc([group(), group(question="other")])
    if isinstance(change, dict):
        d["groups"][0].update(change)
    else:
        d["groups"][0] = change
    data = raw(d).replace(b"12345.5", b"1e999")  # a literal that parses to infinity
    groups, reasons = decode_rollouts(data)
    assert [g.question for g in groups] == ["other"]
    assert len(reasons) == 1 and reason in reasons[0], reasons


def test_size_caps_bound_files_groups_and_completions():
    limits = Limits(max_file_bytes=2000, max_groups_per_file=3, max_completions_per_group=4)
    assert "byte cap" in decode_rollouts(b" " * 2001, limits=limits)[1][0]
    many = raw(doc([group()] * 4))
    assert "over the cap of 3" in decode_rollouts(many, limits=Limits(max_groups_per_file=3))[1][0]
    wide = _with_group(completions=["a"] * 5, rewards=[0.0] * 5, ended=[True] * 5)
    assert "over the cap of 4" in decode_rollouts(wide, limits=limits)[1][0]
