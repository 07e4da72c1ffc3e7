"""Signed records (issue 20, rgym_exp/trust.py): keys, seals, trust on first use, and every
reader refusing what its writer did not sign -- in this process, on a temp folder. The
same attacks on a running swarm: tests/test_attacks.py."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from rgym_exp.config import ConfigError, load_config
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.store import FolderStore
from rgym_exp.experiment import Experiment, ExperimentMismatch, node_trust, question_source
from rgym_exp.records import (ExperimentInfo, PeerRecord, RecordReader, RoundState, StateTracker,
                              parse, read_info)
from rgym_exp.trust import Keys, Refused, Trust, key_id, parse_record, signer_of
from tests.signing import keys, node_exp, pin, register, signer, write_as

ROOT = "experiments/exp"


def config(tmp_path, node="w1", role="worker", **extra):
    env = {"GDRIVE_PATH": str(tmp_path / "drive"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "NODE_ID": node, "NODE_ROLE": role, "EXPERIMENT_NAME": "exp",
           "TASKS": "basic_arithmetic", **extra}
    return load_config(env)[0]


# --- keys ----------------------------------------------------------------------------------

def test_a_node_s_key_is_made_once_private_beside_its_node_id_and_reused(tmp_path):
    cfg = config(tmp_path)
    assert cfg.KEY_DIR == str(tmp_path / "cfg" / "rl-swarm" / "keys")
    first = node_trust(FolderStore(cfg.GDRIVE_PATH), cfg).keys
    path = os.path.join(cfg.KEY_DIR, "w1.key")
    assert first.path == path and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert node_trust(FolderStore(cfg.GDRIVE_PATH), cfg).keys.public == first.public
    assert not any("key" in name for name in os.listdir(cfg.GDRIVE_PATH))  # never shared


def test_an_unusable_key_file_stops_the_node_with_a_message_naming_it(tmp_path):
    cfg = config(tmp_path)
    os.makedirs(cfg.KEY_DIR)
    with open(os.path.join(cfg.KEY_DIR, "w1.key"), "w") as fh:
        fh.write("not a key")
    with pytest.raises(ConfigError, match=r"w1\.key is not an Ed25519 private key .*restore it "
                                          "from your backup"):
        node_trust(FolderStore(cfg.GDRIVE_PATH), cfg)


def test_a_key_folder_inside_the_shared_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="KEY_DIR=.* is inside GDRIVE_PATH"):
        config(tmp_path, KEY_DIR=str(tmp_path / "drive" / "keys"))


# --- seals -----------------------------------------------------------------------------------

def test_a_sealed_file_is_readable_json_and_verifies_only_byte_for_byte_at_its_own_path(tmp_path):
    store = FolderStore(str(tmp_path))
    path = f"{ROOT}/rollouts/round_3/w2.s1.json"
    register(node_exp(store), "w2")
    sealed = write_as(store, "w2", path, {"round": 3, "groups": []})
    doc = json.loads(sealed)                       # a person (or jq) reads it as it is
    assert doc["round"] == 3 and doc["signature"]["by"] == "w2"
    reader = Trust(store)
    assert json.loads(reader.open(path, sealed)) == {"round": 3, "groups": []}
    for elsewhere in (f"{ROOT}/rollouts/round_4/w2.s1.json", f"{ROOT}/rollouts/round_3/w2.s9.json"):
        with pytest.raises(Refused, match="bad signature"):
            reader.open(elsewhere, sealed)        # copied to another round, or another claim
    with pytest.raises(Refused, match="bad signature"):
        reader.open(path, sealed.replace(b'"round": 3', b'"round": 4'))


def test_unsigned_misattributed_and_unknown_files_are_refused_counted_and_named_once(
        tmp_path, caplog):
    store = FolderStore(str(tmp_path))
    reader = node_exp(store, "me")
    register(reader, "w2")
    cases = {f"{ROOT}/peers/w9.json": b'{"node_id": "w9"}',                         # unsigned
             f"{ROOT}/rollouts/round_0/w2.json": signer(store, "w3").seal(
                 f"{ROOT}/rollouts/round_0/w2.json", b'{"a": 1}'),                    # w3 as w2
             f"{ROOT}/submissions/round_0/w2.json": Trust(store, Keys.generate(), "w2").seal(
                 f"{ROOT}/submissions/round_0/w2.json", b'{"a": 1}'),               # w2, not its key
             f"{ROOT}/submissions/round_0/ghost.json": signer(store, "ghost").seal(
                 f"{ROOT}/submissions/round_0/ghost.json", b'{"a": 1}')}            # never registered
    reasons = []
    for path, data in cases.items():
        with pytest.raises(Refused) as err:
            reader.trust.open(path, data)
        reasons.append((err.value.signer, err.value.reason))
    assert reasons == [("w9", "unsigned"), ("w2", "signed by another node (w3)"),
                       ("w2", "signed by another key"), ("ghost", "no key registered")]
    with pytest.raises(ValueError, match="not valid JSON") as torn:
        reader.trust.open(f"{ROOT}/peers/w2.json", b'{"node_id": "w')   # a torn read
    assert not isinstance(torn.value, Refused)                           # not there yet
    line = reader.trust.round_line("round 4")
    assert line.startswith("round 4: refused 4 file(s) that failed verification, ignored: ")
    assert "1 unsigned (claiming w9)" in line and "1 no key registered (claiming ghost)" in line
    assert reader.trust.round_line("round 5") is None                    # one line per round
    assert reader.trust.refused_by_signer()["w2"] == {"signed by another node (w3)": 1,
                                                       "signed by another key": 1}


def test_refusing_an_unsigned_file_costs_no_request_and_a_signer_is_looked_up_once(tmp_path):
    from tests.test_request_budget import Counting
    store = Counting(str(tmp_path))
    reader = Trust(store)
    for k in range(50):
        with pytest.raises(Refused):
            reader.open(f"{ROOT}/rollouts/round_0/junk-{k}.json", b'{"groups": []}')
    assert sum(store.calls.values()) == 0
    write_as(store.inner, "w2", f"{ROOT}/peers/w2.json", PeerRecord("w2", "worker", "s", 1, "running"))
    for r in range(5):
        path = f"{ROOT}/rollouts/round_{r}/w2.json"
        reader.open(path, signer(store, "w2").seal(path, b'{"r": 1}'))
    assert store.calls == {("list", "keys"): 1, ("read", "keys"): 1}   # one lookup


# --- trust on first use ------------------------------------------------------------------------

def test_the_first_key_registered_for_a_node_wins_and_is_remembered_across_restarts(tmp_path):
    store, cache = FolderStore(str(tmp_path)), str(tmp_path / "known.json")
    path = f"{ROOT}/peers/w2.json"
    reader = Trust(store, keys("me"), "me", cache)
    reader.open(path, write_as(store, "w2", path, PeerRecord("w2", "worker", "s", 1, "running")))
    mallory = Trust(store, Keys.generate(), "w2")
    assert mallory.register(ROOT) == keys("w2").public      # registered later: it loses
    impostor = mallory.seal(
        path, b'{"node_id": "w2", "role": "worker", "session": "x", "beat": 9, "status": "running"}')
    again = Trust(store, keys("me"), "me", cache)          # the node restarted
    newcomer = Trust(store)                                 # never saw w2: looks keys/ up
    for trust in (reader, again, newcomer):
        with pytest.raises(Refused, match="signed by another key"):
            trust.open(path, impostor)
    assert newcomer.node_key(ROOT, "w2") == keys("w2").public


def test_a_registration_is_the_oldest_by_the_store_s_clock_and_names_its_own_key(tmp_path):
    store = FolderStore(str(tmp_path))
    assert signer(store, "w3").register(ROOT) == keys("w3").public   # w3 registers first
    mallory = Trust(store, Keys.generate(), "w3")
    assert mallory.register(ROOT) == keys("w3").public   # taken: register writes nothing ...
    late = f"w3.{key_id(mallory.keys.public)}.json"      # ... so Mallory writes one by hand
    store.write(f"{ROOT}/keys/{late}", mallory.seal(f"{ROOT}/keys/{late}", b'{"node_id": "w3"}'))
    folder = tmp_path / ROOT / "keys"
    os.utime(folder / late, (1e9, 1e9))       # a writer can backdate mtime, not creation
    assert Trust(store).first_registered(ROOT, "w3") == keys("w3").public
    # a registration under a name that is not its key's id is no registration
    store2 = FolderStore(str(tmp_path / "two"))
    sealed = signer(store2, "w4").seal(f"{ROOT}/keys/w4.0123456789abcdef.json", b'{"node_id": "w4"}')
    store2.write(f"{ROOT}/keys/w4.0123456789abcdef.json", sealed)
    assert Trust(store2).first_registered(ROOT, "w4") is None


def test_a_replaced_experiment_json_keeps_the_first_for_running_nodes_and_stops_starting_ones(
        tmp_path):
    coord = Experiment.open(config(tmp_path, "coord", "coordinator"))
    made = coord.create_or_check(question_source(coord.config))
    worker = Experiment.open(config(tmp_path, "w1"))
    assert worker.read_info(starting=True).instance == made.instance
    first = open(os.path.join(coord.config.GDRIVE_PATH, worker.layout.experiment_file), "rb").read()
    forged = ExperimentInfo(**{**made.__dict__, "instance": "theirs",
                               "coordinator_key": keys("mallory").public, "coordinator": "coord"})
    sealed = Trust(worker.store, keys("mallory"), "coord").seal(
        worker.layout.experiment_file, json.dumps(forged.__dict__).encode())
    worker.store.write(worker.layout.experiment_file, sealed)
    assert worker.read_info().instance == made.instance            # running: the first one
    with pytest.raises(ExperimentMismatch, match="signed by another coordinator key than the one "
                                                 "this node first saw there"):
        worker.read_info(starting=True)
    coord.restore_info(sealed)                                      # the coordinator's heartbeat
    assert open(os.path.join(coord.config.GDRIVE_PATH, worker.layout.experiment_file),
                "rb").read() == first


def test_a_coordinator_whose_key_is_not_the_pinned_one_refuses_to_run(tmp_path):
    coord = Experiment.open(config(tmp_path, "coord", "coordinator"))
    coord.create_or_check(question_source(coord.config))
    os.remove(coord.trust.keys.path)                                # the key is lost
    os.remove(coord.trust.cache)
    again = Experiment.open(config(tmp_path, "coord", "coordinator"))
    with pytest.raises(ExperimentMismatch, match="pinned in experiment.json.*restore that "
                                                 "coordinator's key file"):
        again.create_or_check(question_source(again.config))


@pytest.mark.parametrize("role", ["worker", "coordinator"])
def test_a_folder_of_the_unsigned_protocol_2_is_refused_naming_the_version(tmp_path, role):
    exp = Experiment.open(config(tmp_path, "n1", role))
    exp.store.write(exp.layout.experiment_file, json.dumps({
        "name": "exp", "protocol": 2, "created_at": 0.0, "shared": {}, "questions": {},
        "max_rounds": 5, "coordinator": "c"}).encode())
    with pytest.raises(ExperimentMismatch, match="written by folder protocol 2, without "
                                                 "signatures; this code speaks protocol 3"):
        if role == "coordinator":
            exp.create_or_check(question_source(exp.config))
        else:
            from rgym_exp.waiting import Waiter
            exp.wait_and_check(question_source(exp.config), Waiter(0.01, 1))


# --- every record type: depth and size at parse time ----------------------------------------------

DEEP = b'{"a": ' * 600 + b'1' + b'}' * 600


def test_json_nested_600_deep_is_refused_at_parse_time_for_every_record_type(tmp_path):
    with pytest.raises(ValueError, match="nested deeper than 16"):
        parse_record(DEEP, 1 << 20)
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "me")
    pin(store, exp.layout, "coord")
    deep = {"node_id": "w2", "role": "worker", "session": "s", "beat": 1, "status": "running",
            "used_from": json.loads(DEEP)}
    for path, who, cls in ((exp.layout.peer("w2"), "w2", PeerRecord),
                           (exp.layout.state_file, "coord", RoundState)):
        write_as(store, who, path, json.dumps(deep).encode())
        assert exp.reader.read(cls, path) is None                 # no RecursionError
    from rgym_exp.readers import read_round, read_retired
    write_as(store, "w2", exp.layout.submission(0, "w2"), json.dumps(
        {"round": 0, "node_id": "w2", "metrics": json.loads(DEEP)}).encode())
    assert read_round(store, exp.layout, 0, exp.reader) == {}
    write_as(store, "coord", exp.layout.retired_submissions(0), DEEP)
    assert read_retired(store, exp.layout, 0, exp.reader) == {}
    from rgym_exp.checkpoints import read_manifest
    write_as(store, "w2", f"{exp.layout.checkpoint_dir('w2', 0)}/manifest.json", DEEP)
    with pytest.raises(ValueError, match="nested deeper"):
        read_manifest(exp.trust, exp.layout.checkpoint_dir("w2", 0))


def test_a_claim_survives_a_deep_or_junk_record_at_its_own_path_and_takes_it_over(tmp_path):
    from rgym_exp.heartbeat import Heartbeat
    from rgym_exp.waiting import Waiter
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "w1")
    store.write(exp.layout.peer("w1"), DEEP)
    store.write(exp.layout.peer("W1"), b'{"node_id": "W1"}')         # junk with a near name
    hb = Heartbeat(exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    hb.claim()
    assert exp.reader.read(PeerRecord, exp.layout.peer("w1")).session == hb.record.session


# --- records only their writers can make --------------------------------------------------------

def test_forged_state_files_neither_end_nor_advance_the_experiment(tmp_path):
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "w1")
    pin(store, exp.layout, "coord")
    tracker = StateTracker(exp.reader, exp.layout.state_file)
    write_as(store, "coord", exp.layout.state_file, RoundState(round=2, started_at=0, deadline=9,
                                                               max_rounds=8))
    assert tracker.refresh().round == 2
    for forged in (RoundState(round=2, started_at=0, deadline=9, max_rounds=8, finished=True),
                   RoundState(round=999_999_999, started_at=0, deadline=9, max_rounds=10 ** 9)):
        store.write(exp.layout.state_file, json.dumps(forged.__dict__).encode())       # unsigned
        assert (tracker.refresh().round, tracker.state.finished) == (2, False)
        write_as(store, "mallory", exp.layout.state_file, forged)                      # not pinned
        assert (tracker.refresh().round, tracker.state.finished) == (2, False)
    write_as(store, "coord", exp.layout.state_file, RoundState(round=12, started_at=0, deadline=9,
                                                               max_rounds=8))
    assert tracker.refresh().round == 2                    # out of range even when signed


def test_a_forged_peer_record_rewritten_over_a_running_node_never_takes_it_over(tmp_path):
    from rgym_exp.heartbeat import Heartbeat
    from rgym_exp.waiting import Waiter
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "w1")
    hb = Heartbeat(exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    hb.claim()
    forged = PeerRecord("w1", "worker", "forger", beat=10 ** 6, status="running")
    for seal in (lambda p, b: b, Trust(store, Keys.generate(), "w1").seal):
        store.write(hb.path, seal(hb.path, json.dumps(forged.__dict__).encode()))
        hb._written_at = hb._verified_at = -1e9            # it must read the record now
        assert hb.owns() and not hb.taken_over.is_set()
        hb.beat()
    assert exp.reader.read(PeerRecord, hb.path).session == hb.record.session


def test_an_older_registration_by_another_key_is_an_impostor_only_where_ours_was_made(
        tmp_path, caplog):
    from rgym_exp.heartbeat import DuplicateNode, Heartbeat
    from rgym_exp.waiting import Waiter
    cfg = config(tmp_path)
    exp = Experiment.open(cfg)
    Heartbeat(exp, "w1", "worker", 0.2, Waiter(0.05, 5)).claim()
    folder = os.path.join(cfg.GDRIVE_PATH, ROOT, "keys")
    for name in os.listdir(folder):                        # ours removed, an impostor's made
        os.remove(os.path.join(folder, name))
    Trust(exp.store, Keys.generate(), "w1").register(ROOT)
    exp.store.write(exp.layout.peer("w1"), Trust(exp.store, Keys.generate(), "w1").seal(
        exp.layout.peer("w1"), json.dumps(PeerRecord("w1", "worker", "x", beat=5,
                                                     status="stopped").__dict__).encode()))
    again = Experiment.open(cfg)                           # restarted on this machine
    with caplog.at_level(logging.WARNING):
        Heartbeat(again, "w1", "worker", 0.2, Waiter(0.05, 5)).claim()
    assert "ours was removed" in caplog.text
    other = Experiment.open(config(tmp_path / "machine2"))  # another machine, another key
    other.use_store(FolderStore(cfg.GDRIVE_PATH))
    with pytest.raises(DuplicateNode, match="registered with another key .*copy the key file"):
        Heartbeat(other, "w1", "worker", 0.2, Waiter(0.05, 5)).claim()


def test_forged_submissions_do_not_count_for_the_coordinator(drive, tmp_path):
    from tests.test_coordinator import beat, make, submit
    coord, exp, clock = make(drive, tmp_path)
    state = coord.resume_or_start()
    beat(exp, "w1", 1), beat(exp, "w2", 1)
    submit(exp, 0, "w1")
    exp.store.write(exp.layout.submission(0, "w2"), json.dumps(
        {"round": 0, "node_id": "w2"}).encode())            # planted, unsigned
    state = coord.tick(state)
    assert state.round == 0 and state.waiting_for == ["w2"]
    submit(exp, 0, "w2")                                    # the real one replaces it
    clock.now += 1
    assert coord.tick(state).round == 1


def test_rollouts_under_another_s_name_or_the_coordinator_s_are_not_used(tmp_path):
    import numpy as np
    from genrl.rewards import RewardRule
    from genrl.rollouts import RolloutGroup, encode_rollouts
    from genrl.sapo import ExternalSelector
    from rgym_exp.exchange import RolloutExchange
    from tests.test_reliability import TwoPlusTwo
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "w1", info=pin(store, Layout("exp"), "coord"))
    register(exp, "w2")
    store.makedirs(exp.layout.rollouts_dir(0))
    group = lambda n: RolloutGroup(n, 0, "m", "What is 2+2?", {}, ["<answer>4</answer>", "5"],  # noqa
                                   [1, 0])
    for node, chunk, claim in (("w2", 7, 64), ("coord", None, 5)):
        path = exp.layout.rollout(0, node, chunk, claim)
        store.write(path, encode_rollouts([group(node)] * 2, node, 0))    # someone else's file
    write_as(store, "coord", exp.layout.rollout(0, "coord", None, 1),
             encode_rollouts([group("coord")], "coord", 0))
    ex = RolloutExchange(exp, "w1")
    got = ex.gather(0, 4, ExternalSelector(TwoPlusTwo(), RewardRule(), "w1"),
                    np.random.default_rng(0))
    assert got.groups == [] and got.rejected["refused: unsigned"] == 1
    assert got.rejected["under the coordinator's name (it publishes none)"] == 2
    assert ex.distrusted == set() and got.broken_claims == 0      # w2's claims still count


def test_status_and_credit_show_only_signed_bounded_claims(tmp_path):
    from rgym_exp.credit import from_peers
    from rgym_exp.status import render, take_snapshot
    store = FolderStore(str(tmp_path))
    layout = Layout("exp")
    forged = {"node_id": "evil", "role": "worker", "session": "s", "beat": 1,
              "status": "running", "used_from": {"w1": [10 ** 9, 10 ** 15]}}
    store.write(layout.peer("evil"), json.dumps(forged).encode())            # unsigned
    write_as(store, "w2", layout.peer("w2"), json.dumps(dict(
        forged, node_id="w2", round=3, used_from={"w1": [10 ** 9, 0.5]},
        refused={"w1": {"bad signature": 4}})).encode())                   # signed, but absurd
    write_as(store, "w1", layout.peer("w1"), PeerRecord("w1", "worker", "s", 1, "running"))
    snap = take_snapshot(store, "exp", now=0)
    rows = {n.node_id: n for n in snap.nodes}
    assert set(rows) == {"w1", "w2"} and rows["w1"].used_by_peers == 0
    assert from_peers({"w2": parse(PeerRecord, json.dumps(dict(
        forged, node_id="w2", round=3, used_from={"w1": [40, 20.0]})).encode())})["w1"] \
        .used_by_others == 40                                   # 40 groups by round 3: plausible
    assert rows["w1"].refused == 4 and snap.refused["evil"] == {"unsigned": 1}
    text = render(snap)
    assert "refused files claiming to be w1's: 4 (4 bad signature)" in text
    assert "refused files claiming to be evil's: 1 (1 unsigned)" in text


def test_signer_of_names_who_must_have_signed_each_record_and_nothing_else():
    assert signer_of(f"{ROOT}/state/current_state.json") == (ROOT, "(coordinator)")
    assert signer_of(f"{ROOT}/rollouts/round_3/w-2.7.s64.json") == (ROOT, "w-2")
    assert signer_of(f"{ROOT}/checkpoints/w1/round_3/manifest.json") == (ROOT, "w1")
    for path in (f"{ROOT}/logs/w1/metrics.jsonl", f"{ROOT}/checkpoints/w1/round_3/model.safetensors",
                 f"{ROOT}/.claims/w1.0", f"{ROOT}/peers/../w1.json"):
        assert signer_of(path) is None


def test_records_read_through_a_reader_without_a_key_verify_against_registrations(tmp_path):
    store = FolderStore(str(tmp_path))
    layout = Layout("exp")
    info = pin(store, layout, "coord")
    assert read_info(store, layout, Trust(store)).coordinator_key == info.coordinator_key
    write_as(store, "coord", layout.state_file, RoundState(round=1, started_at=0, deadline=1,
                                                           max_rounds=3))
    assert RecordReader(store).read(RoundState, layout.state_file).round == 1


def test_junk_in_keys_neither_breaks_a_lookup_nor_stands_in_for_a_registration(tmp_path):
    store = FolderStore(str(tmp_path))
    folder = tmp_path / ROOT / "keys"
    folder.mkdir(parents=True)
    (folder / "w5.00000000000000aa.json").write_bytes(b"x" * (1 << 20))      # huge
    (folder / "w5.00000000000000bb.json").write_bytes(b'{"a": ' * 600 + b"1" + b"}" * 600)
    (folder / "w5.00000000000000cc.json").write_bytes(b'{"node_id": "w5"}')  # unsigned
    (folder / "w5.00000000000000dd.json").mkdir()                          # a folder
    os.symlink("/dev/zero", folder / "w5.00000000000000ee.json")           # a link
    mallory = Keys.generate()                                              # a bad signature
    forged = f"{ROOT}/keys/w5.{key_id(mallory.public)}.json"
    store.write(forged, Trust(store, mallory, "w5").seal(forged, b'{"node_id": "w9"}')
                .replace(b'"w9"', b'"w5"'))
    assert Trust(store).first_registered(ROOT, "w5") is None               # none stands in
    assert signer(store, "w5").register(ROOT) == keys("w5").public         # w5 registers
    reader = Trust(store)
    assert reader.first_registered(ROOT, "w5") == keys("w5").public
    assert reader.registered_nodes(ROOT) == {"w5"}
