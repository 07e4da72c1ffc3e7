"""DriveApiStore against a fake Drive server, through the real googleapiclient client.

No network: tests/fake_drive.py serves Drive v3 on 127.0.0.1. The last test runs a
coordinator and two workers as launcher processes on GDRIVE_PATH=gdrive://<id> and
reports the API calls each worker makes per round.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.fake_drive import FakeDrive
from rgym_exp.drive.drive_api import DriveApiStore
from rgym_exp.drive.drive_auth import classify, credentials_from_file
from rgym_exp.drive.backends import open_store
from rgym_exp.drive.store import RetryingStore, StoreError, TooLarge, TransientStoreError
from tests.swarm_helpers import node_env, start_node, wait_all

CALLS_REPORT = "/tmp/rl-swarm-drive-api-calls.txt"


@pytest.fixture
def fake():
    with FakeDrive() as server:
        yield server


def open_api(fake: FakeDrive, **options) -> DriveApiStore:
    """The API store alone: one request per try, no retries."""
    options.setdefault("sleep", lambda s: None)
    return DriveApiStore.from_url(f"gdrive://{fake.root_id}", endpoint=fake.url, **options)


def open_node(fake: FakeDrive, sleep=lambda s: None, **retrying) -> RetryingStore:
    """The store as a node has it: the API store under the one retry layer."""
    return RetryingStore(open_api(fake), sleep=sleep, **retrying)


class VirtualClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


# --- the fake itself ---------------------------------------------------------------------

def test_the_fake_understands_the_q_filters_the_store_sends():
    from rgym_exp.drive.drive_auth import quote
    from tests.fake_drive import FOLDER, Item, parse_query
    odd = "it's a \\ back'slash"
    items = [Item("f1", odd, "application/json", ["p1"]), Item("d1", odd, FOLDER, ["p2"]),
             Item("f2", "other", "application/json", ["p1"], trashed=True)]
    q = (f"('p1' in parents or 'p2' in parents) and trashed = false and name = {quote(odd)} "
         f"and not mimeType = {quote(FOLDER)}")
    assert [i.id for i in items if parse_query(q)(i)] == ["f1"]
    assert [i.id for i in items if parse_query("'p1' in parents")(i)] == ["f1", "f2"]


# --- the Store promises ------------------------------------------------------------------

def test_rewrites_keep_one_file_and_quotes_in_names_are_escaped(fake):
    store = open_api(fake)  # the Store promises themselves: tests/test_store_contract.py
    for data in (b'{"round": 1}', b"", b"2"):
        store.write("experiments/x/state/current_state.json", data)
    assert len(fake.find("experiments/x/state/current_state.json")) == 1
    store.write("experiments/x/it's \"quoted\".json", b"q")  # quotes escaped in the q filter
    assert store.read("experiments/x/it's \"quoted\".json", 10) == b"q"


def test_read_past_the_cap_raises_too_large_without_downloading(fake):
    store = open_api(fake)
    store.write("big.json", b"x" * 100)
    before = fake.counts()["files.get_media"]
    with pytest.raises(TooLarge):
        store.read("big.json", 99)
    with pytest.raises(TooLarge):
        store.download("big.json", os.devnull, 99)
    assert fake.counts()["files.get_media"] == before


def test_an_unchanged_file_is_downloaded_once_and_a_changed_one_again(fake):
    clock = VirtualClock()
    writer, reader = open_api(fake), open_api(fake, clock=clock)
    writer.write("state/current_state.json", b'{"round": 1}')
    polls = []
    for _ in range(3):
        polls.append(reader.read("state/current_state.json", 100))
        clock.t += 3
    assert polls == [b'{"round": 1}'] * 3
    assert reader.calls["files.get_media"] == 1  # then only the metadata: same id, same md5
    writer.write("state/current_state.json", b'{"round": 2}')
    assert reader.read("state/current_state.json", 100) == b'{"round": 2}'
    assert writer.read("state/current_state.json", 100) == b'{"round": 2}'
    assert writer.calls["files.get_media"] == 0  # its own last write: known content


def test_two_writes_within_one_millisecond_read_back_the_second(fake, monkeypatch):
    """Drive's modifiedTime has millisecond resolution; the fake answers faster than that.
    A listed copy with the same time as this process's own last write is not newer than it
    (seen once in the suite: a rewrite to a shorter file read back the longer one's size)."""
    import tests.fake_drive
    monkeypatch.setattr(tests.fake_drive, "stamp", lambda t=None: "2026-11-26T16:00:00.000Z")
    store = open_api(fake)
    store.write("state/current_state.json", b"x" * 1030)
    assert [(e.name, e.size) for e in store.list("state")] == [("current_state.json", 1030)]
    store.write("state/current_state.json", b"short")
    assert store.read("state/current_state.json", 100) == b"short"


def test_nested_paths_create_each_folder_once(fake):
    store = open_api(fake)
    store.write("a/b/c/one.json", b"1")
    store.write("a/b/c/two.json", b"2")
    store.write("a/b/three.json", b"3")
    assert [len(fake.find(p)) for p in ("a", "a/b", "a/b/c")] == [1, 1, 1]
    assert [(e.name, e.is_dir) for e in store.list("a/b")] == [("c", True), ("three.json", False)]
    assert [e.size for e in store.list("a/b/c")] == [1, 1]


def test_listing_reads_every_page(fake):
    fake.max_page_size, fake.full_pages = 3, True
    store = open_api(fake)
    for i in range(10):
        store.write(f"many/f{i:02d}.json", b"{}")
    before = fake.counts()["files.list"]
    assert [e.name for e in store.list("many")] == [f"f{i:02d}.json" for i in range(10)]
    assert fake.counts()["files.list"] - before == 4  # ceil(10 / 3) pages; the folder is cached


def test_partial_and_empty_pages_with_a_next_token_still_list_everything(fake):
    fake.max_page_size = 4   # Drive may answer fewer items than asked, even none, and a token
    store = open_api(fake)
    for i in range(30):
        store.write(f"many/f{i:02d}.json", b"{}")
    before = fake.counts()["files.list"]
    for _ in range(3):
        assert [e.name for e in store.list("many")] == [f"f{i:02d}.json" for i in range(30)]
    assert fake.counts()["files.list"] - before > 3 * 30 / 4  # the pages were partial


def test_open_store_uses_the_api_for_gdrive_paths(fake):
    store = open_store(f"gdrive://{fake.root_id}", endpoint=fake.url)
    assert isinstance(store, RetryingStore) and "via the API" in store.description
    store.write("x.json", b"1")
    assert store.read("x.json", 10) == b"1"


# --- idempotent and resumable uploads ----------------------------------------------------

def test_create_retried_after_a_lost_response_makes_no_duplicate(fake):
    store = open_node(fake)
    fake.fail(500, kind="files.create", after=True)  # stored, but the client sees a 500
    store.write("subs/round_0/w1.json", b"v1")
    assert store.retries == 1
    assert [i.data for i in fake.find("subs/round_0/w1.json")] == [b"v1"]


def test_a_write_that_gave_up_is_finished_by_the_next_one_without_duplicate(fake):
    store = open_node(fake, attempts=4)
    store.write("subs/keep.json", b"folder exists")
    fake.fail(503, kind="files.create", count=1, after=True)
    fake.fail(503, count=3)   # and every later try of that write fails too
    with pytest.raises(TransientStoreError):
        store.write("subs/w1.json", b"old")
    store.write("subs/w1.json", b"new")  # as RetryingStore would retry
    assert [i.data for i in fake.find("subs/w1.json")] == [b"new"]


def test_resumable_upload_of_a_multi_chunk_file_survives_chunk_failures(fake, tmp_path):
    store = RetryingStore(open_api(fake, resumable_over=512 * 1024, chunk_size=256 * 1024),
                          sleep=lambda s: None)
    data = os.urandom(1_100_000)  # 5 chunks of 256 KiB
    (tmp_path / "big.bin").write_bytes(data)
    fake.fail(500, kind="upload.chunk", count=1)              # a chunk lost on the way
    fake.fail(502, kind="upload.chunk", count=1, after=True)  # a chunk stored, answer lost
    store.upload(str(tmp_path / "big.bin"), "ck/big.bin")
    assert [i.data == data for i in fake.find("ck/big.bin")] == [True]
    assert fake.counts()["upload.chunk"] >= 5 and store.retries == 2
    assert fake.counts()["files.create"] == 2  # the folder + one upload session, continued
    store.write("ck/big.bin", data[::-1])  # an update of a big file is resumable too
    assert store.read("ck/big.bin", 2 << 20) == data[::-1]
    assert len(fake.find("ck/big.bin")) == 1


# --- retries -------------------------------------------------------------------------------

@pytest.mark.parametrize("status,reason", [(403, "rateLimitExceeded"),
                                           (403, "userRateLimitExceeded"), (429, ""), (500, ""),
                                           (503, "")])
def test_rate_limits_and_server_errors_back_off_then_succeed(fake, status, reason):
    sleeps = []
    store = open_node(fake, sleep=sleeps.append, base=0.5, cap=1.5)
    store.write("state/s.json", b"ok")
    fake.fail(status, reason, count=3, kind="files.list")
    assert open_node(fake, sleep=sleeps.append, base=0.5, cap=1.5).read("state/s.json", 10) == b"ok"
    assert len(sleeps) == 3
    # exponential (0.5, 1, 2 s) capped at 1.5 s, each times a random factor in [0.5, 1]
    assert [lo <= s <= hi for s, (lo, hi) in zip(sleeps, [(0.25, 0.5), (0.5, 1), (0.75, 1.5)])] \
        == [True] * 3


def test_gives_up_after_a_few_attempts_with_a_transient_error(fake):
    store = open_node(fake, attempts=3)
    fake.fail(429, count=10, kind="files.list")
    with pytest.raises(TransientStoreError, match="429"):
        store.list("anything")
    assert fake.counts()["files.list"] == 3  # one retry layer: 3 tries in all, not 3 x 4


def test_one_operation_never_retries_past_its_time_budget(fake):
    clock = VirtualClock()
    store = open_node(fake, sleep=clock.sleep, clock=clock, attempts=100, budget_s=60)
    fake.fail(503, count=1000, kind="files.list")
    with pytest.raises(TransientStoreError):
        store.list("anything")
    tries = fake.counts()["files.list"]
    assert clock.t - 1000 <= 60 and 4 <= tries <= 10, (clock.t, tries)


def test_past_the_quota_drive_answers_429_and_403_and_backing_off_gets_through():
    clock = VirtualClock()
    with FakeDrive(quota_per_minute=20, clock=clock) as fake:
        store = open_node(fake, sleep=clock.sleep, clock=clock)
        store.write("peers/w1.json", b"{}")
        for _ in range(40):          # far more requests than 20 a minute allows
            assert [e.name for e in store.list("peers")] == ["w1.json"]
        assert fake.refused["rateLimitExceeded"] > 0 and store.retries > 0
        assert clock.t - 1000 >= 60  # the store waited for the next minute's quota
    with FakeDrive(user_quota_per_minute=10, clock=clock) as fake:
        fake.user_of = {"w2": "w2@example.com"}
        store = open_node(fake, sleep=clock.sleep, clock=clock)
        for k in range(12):
            store.write(f"logs/f{k}.json", b"{}")
        assert fake.refused["userRateLimitExceeded"] > 0
        assert len(store.list("logs")) == 12


@pytest.mark.parametrize("status,reason", [(400, "badRequest"),
                                           (403, "insufficientFilePermissions")])
def test_client_errors_are_raised_at_once(fake, status, reason):
    store = open_api(fake)
    fake.fail(status, reason, kind="files.list")
    with pytest.raises(StoreError) as info:
        store.read("state/s.json", 10)
    assert not isinstance(info.value, TransientStoreError)
    assert str(status) in str(info.value) and "state/s.json" in str(info.value)
    assert fake.counts()["files.list"] == 1 and store.retries == 0


def test_a_404_download_reads_as_missing_without_retry(fake):
    open_api(fake).write("peers/w2.json", b"{}")
    store = open_api(fake)
    fake.fail(404, kind="files.get_media")
    assert store.read("peers/w2.json", 10) is None
    assert fake.counts()["files.get_media"] == 1 and store.retries == 0


# --- Drive's quirks: duplicate names, listing lag -------------------------------------

def test_duplicate_names_read_the_newest_then_the_larger_id(fake):
    store = open_api(fake)
    store.write("peers/keep.json", b"{}")
    folder = fake.find("peers")[0].id
    t = time.time()
    fake.add("w3.json", folder, b"old", modified=t - 10)
    fake.add("w3.json", folder, b"new", modified=t)
    assert store.read("peers/w3.json", 10) == b"new"
    assert [e.size for e in store.list("peers") if e.name == "w3.json"] == [3]
    fake.add("tie.json", folder, b"A", modified=t, file_id="A" * 33)
    fake.add("tie.json", folder, b"B", modified=t, file_id="B" * 33)
    assert store.read("peers/tie.json", 10) == b"B"


def test_the_writer_keeps_one_copy_of_a_duplicated_file(fake):
    store = open_api(fake)
    store.write("peers/keep.json", b"{}")
    folder = fake.find("peers")[0].id
    for age in (3, 2, 1):
        fake.add("w1.json", folder, b"stale", modified=time.time() - age)
    open_api(fake).write("peers/w1.json", b"mine")  # a fresh process: no id cache
    assert [i.data for i in fake.find("peers/w1.json")] == [b"mine"]


def test_duplicate_folders_are_read_as_one(fake):
    for node in ("w1", "w2"):  # two nodes made round_4 at the same time
        folder = fake.add("round_4", fake.root_id, folder=True)
        fake.add(f"{node}.json", folder, node.encode())
    store = open_api(fake)
    assert [e.name for e in store.list("round_4")] == ["w1.json", "w2.json"]
    assert store.read("round_4/w2.json", 10) == b"w2"
    store.delete("round_4")
    assert fake.find("round_4") == []


def test_a_listing_across_many_copies_of_a_folder_passes_the_url_limit(fake):
    # 64 nodes that start at once can each make experiments/x: the listing's query names
    # every copy, its URL passes 2,048 characters, and the client sends it as a POST with
    # the query in a form body (x-http-method-override: GET), which Drive accepts
    for k in range(64):
        fake.add(f"w{k}.json", fake.add("round_4", fake.root_id, folder=True), b"{}")
    store = open_api(fake)
    assert len(store.list("round_4")) == 64
    assert store.read("round_4/w63.json", 10) == b"{}"


def test_a_folder_made_ahead_is_shared_by_later_writers():
    with FakeDrive(list_lag=0.05) as fake:
        open_api(fake).makedirs("exp/rollouts/round_3")
        time.sleep(0.1)  # the coordinator opens the round later than that
        for node in ("w1", "w2"):
            open_api(fake).write(f"exp/rollouts/round_3/{node}.json", b"{}")
        assert len(fake.find("exp/rollouts/round_3")) == 1


def test_listing_lag_neither_hides_own_writes_nor_makes_duplicates():
    with FakeDrive(list_lag=60) as fake:
        store = open_api(fake)
        store.write("exp/peers/w1.json", b"1")
        store.write("exp/peers/w1.json", b"2")
        store.write("exp/peers/w2.json", b"3")
        assert store.read("exp/peers/w1.json", 10) == b"2"
        assert [len(fake.find(p)) for p in ("exp", "exp/peers", "exp/peers/w1.json")] == [1, 1, 1]
        assert store.list("exp/peers") == []  # not listed yet: callers never assume it is
        assert open_api(fake).read("exp/peers/w1.json", 10) is None  # others see it later


def test_threads_writing_into_a_new_folder_make_it_once(fake):
    store = open_api(fake)
    errors = []

    def writer(k):
        try:
            store.write(f"logs/w1/f{k}.log", b"x" * k)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.find("logs")) == 1 and len(fake.find("logs/w1")) == 1
    assert len(store.list("logs/w1")) == 4


def test_names_that_differ_only_in_case_stay_two_files(fake, monkeypatch):
    # Drive's name = '..' ignores case: without an exact-name filter alice's writer took
    # Alice.json for a duplicate of its own file and deleted it
    monkeypatch.setenv("NODE_ID", "Alice")
    upper = open_api(fake)
    monkeypatch.setenv("NODE_ID", "alice")
    lower = open_api(fake)
    upper.write("exp/peers/Alice.json", b"A")
    lower.write("exp/peers/alice.json", b"a")
    fresh = open_api(fake)
    assert fresh.read("exp/peers/Alice.json", 10) == b"A"
    assert fresh.read("exp/peers/alice.json", 10) == b"a"
    open_api(fake).write("exp/peers/alice.json", b"a2")   # a restarted writer: no id cache
    assert sorted(i.name for i in fake.children(fake.find("exp/peers")[0].id)) == [
        "Alice.json", "alice.json"]
    assert [e.name for e in fresh.list("exp/peers")] == ["Alice.json", "alice.json"]


def test_listings_lag_updates_and_deletes_but_reads_by_id_do_not():
    with FakeDrive(list_lag=30) as fake:
        writer = open_api(fake)
        fake.add("exp", fake.root_id, folder=True)
        folder = fake.add("state", fake.find("exp")[0].id, folder=True)
        fake.add("current_state.json", folder, b"round 1")
        clock = VirtualClock()
        reader = open_api(fake, clock=clock)
        assert reader.read("exp/state/current_state.json", 100) == b"round 1"
        writer.write("exp/state/current_state.json", b"round 2!")
        assert [e.size for e in reader.list("exp/state")] == [7]          # the index lags
        clock.t += reader.hint_s + 1                                       # no fresh listing
        assert reader.read("exp/state/current_state.json", 100) == b"round 2!"  # files.get
        writer.delete("exp/state/current_state.json")
        assert [e.name for e in reader.list("exp/state")] == ["current_state.json"]
        assert reader.read("exp/state/current_state.json", 100) is None    # 404: gone


def test_a_read_after_a_listing_costs_one_download_and_a_poll_one_request_at_most_every_2s(fake):
    writer = open_api(fake)
    for node in ("w1", "w2", "w3"):
        writer.write(f"exp/peers/{node}.json", node.encode())
    clock = VirtualClock()
    reader = open_api(fake, clock=clock, settle_s=0)   # no look again at young folders here
    reader.list("exp/peers")
    before = reader.calls.copy()
    assert [reader.read(f"exp/peers/{n}.json", 10) for n in ("w1", "w2", "w3")] == [
        b"w1", b"w2", b"w3"]
    assert reader.calls - before == {"files.get_media": 3}   # the listing said where they are
    clock.t += reader.hint_s + 1
    before = reader.calls.copy()
    for _ in range(3):                                          # polling an unchanged file
        assert reader.read("exp/peers/w1.json", 10) == b"w1"
        clock.t += reader.poll_s
    assert reader.calls - before == {"files.get": 3}
    before = reader.calls.copy()
    for _ in range(5):                                          # faster than poll_s: one look
        assert reader.read("exp/peers/w1.json", 10) == b"w1"
        clock.t += reader.poll_s / 5
    assert reader.calls - before == {"files.get": 1}


def test_in_my_drive_only_the_owner_deletes(monkeypatch):
    with FakeDrive() as fake:
        fake.user_of = {"w1": "w1@example.com", "coord": "owner"}
        monkeypatch.setenv("NODE_ID", "w1")
        worker = open_api(fake)
        worker.write("exp/rollouts/round_0/w1.json", b"{}")
        monkeypatch.setenv("NODE_ID", "coord")
        coordinator = open_api(fake)
        with pytest.raises(StoreError, match="403 insufficientFilePermissions"):
            coordinator.delete("exp/rollouts/round_0/w1.json")
        assert len(fake.find("exp/rollouts/round_0/w1.json")) == 1
        coordinator.makedirs("exp/rollouts/round_1")
        worker.write("exp/rollouts/round_1/w1.json", b"{}")
        coordinator.delete("exp/rollouts/round_1")   # its folder goes; w1's file is orphaned
        assert fake.find("exp/rollouts/round_1") == []
        assert [i.parents for i in fake.items.values() if i.owner == "w1@example.com"
                and i.name == "w1.json" and not i.parents] == [[]]


@pytest.mark.parametrize("role, outcome", [("organizer", "deleted"),
                                            ("fileOrganizer", "trashed"),
                                            ("writer", "refused")])
def test_in_a_shared_drive_organizers_delete_content_managers_trash(role, outcome, monkeypatch):
    with FakeDrive(shared_drive=True) as fake:
        fake.user_of, fake.roles = {"coord": "c@example.com"}, {"c@example.com": role}
        monkeypatch.setenv("NODE_ID", "coord")
        store = open_api(fake)
        store.write("exp/rollouts/round_0/w1.json", b"{}")
        assert store.read("exp/rollouts/round_0/w1.json", 10) == b"{}"
        if outcome == "refused":
            with pytest.raises(StoreError, match="403"):
                store.delete("exp/rollouts/round_0")
            return
        store.delete("exp/rollouts/round_0")
        assert store.list("exp/rollouts") == []
        gone = [i for i in fake.items.values() if i.name == "round_0"]
        assert (gone == []) if outcome == "deleted" else [i.trashed for i in gone] == [True]


def test_a_shared_drive_hides_its_files_from_requests_without_its_flags():
    with FakeDrive(shared_drive=True) as fake:
        store = open_api(fake)
        store.write("exp/x.json", b"1")
        from googleapiclient.errors import HttpError
        fid = fake.find("exp/x.json")[0].id
        with pytest.raises(HttpError) as info:
            store.files.get(fileId=fid).execute(http=store._http())
        assert info.value.resp.status == 404
        listed = store.files.list(q=f"'{fake.find('exp')[0].id}' in parents").execute(
            http=store._http())
        assert listed["files"] == []
        assert store.read("exp/x.json", 10) == b"1"   # the store always sends the flags


def test_a_write_waits_for_the_coordinator_s_round_folder_instead_of_making_one(fake):
    from rgym_exp.drive.layout import ROUND_FOLDERS
    from rgym_exp.drive.store import FolderWait
    clock = VirtualClock()
    worker = RetryingStore(open_api(fake, folder_wait=FolderWait(ROUND_FOLDERS, 90, clock)),
                           sleep=clock.sleep, clock=clock, budget_s=30)
    with pytest.raises(TransientStoreError, match="not visible yet"):
        worker.write("exp/rollouts/round_3/w1.json", b"{}")
    assert fake.find("exp/rollouts/round_3") == []
    open_api(fake).makedirs("exp/rollouts/round_3")        # the coordinator opens round 3
    worker.write("exp/rollouts/round_3/w1.json", b"{}")
    worker.write("exp/checkpoints/w1/round_3/model.bin", b"x")  # its own folders: made at once
    assert len(fake.find("exp/rollouts/round_3")) == 1
    with pytest.raises(TransientStoreError):
        worker.write("exp/submissions/round_4/w1.json", b"{}")
    clock.t += 91                                           # no coordinator for 90 s: make it
    worker.write("exp/submissions/round_4/w1.json", b"{}")
    assert len(fake.find("exp/submissions/round_4/w1.json")) == 1


# --- credentials ------------------------------------------------------------------------

def test_a_missing_credentials_file_is_named(tmp_path):
    with pytest.raises(StoreError, match="GDRIVE_CREDENTIALS=.*no such file"):
        DriveApiStore.from_url("gdrive://abcdefgh", credentials=str(tmp_path / "none.json"))


def test_an_unknown_credentials_type_says_what_is_expected(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"type": "external_account", "audience": "x"}))
    with pytest.raises(StoreError, match="service_account.*authorized_user"):
        DriveApiStore.from_url("gdrive://abcdefgh", credentials=str(path))
    path.write_text(json.dumps({"installed": {"client_id": "x"}}))
    with pytest.raises(StoreError, match="client secret"):
        DriveApiStore.from_url("gdrive://abcdefgh", credentials=str(path))
    path.write_text("not json")
    with pytest.raises(StoreError, match="JSON"):
        DriveApiStore.from_url("gdrive://abcdefgh", credentials=str(path))


def test_no_credentials_at_all_says_what_to_set(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(StoreError, match="set GDRIVE_CREDENTIALS"):
        DriveApiStore.from_url("gdrive://abcdefgh")


def test_an_oauth_token_file_is_recognised_with_or_without_type(tmp_path):
    token = {"token": "t", "refresh_token": "r", "client_id": "c", "client_secret": "s",
             "token_uri": "https://oauth2.googleapis.com/token"}
    for doc in (token, dict(token, type="authorized_user")):
        (tmp_path / "token.json").write_text(json.dumps(doc))
        creds, who = credentials_from_file(str(tmp_path / "token.json"), "GDRIVE_CREDENTIALS")
        assert "OAuth" in who and creds.refresh_token == "r"


def test_a_token_that_cannot_be_refreshed_is_a_clear_permanent_error():
    from google.auth.exceptions import RefreshError
    err = classify(RefreshError("invalid_grant: Token has been expired or revoked."), "x.json",
                   "files.list", "OAuth user token token.json")
    assert not isinstance(err, TransientStoreError)
    assert "credentials do not work" in str(err) and "GDRIVE_CREDENTIALS" in str(err)


def test_a_transient_error_on_the_first_request_is_retried_not_fatal(fake):
    # CI saw a coordinator exit 2 at start-up: the folder check was the one request outside
    # the retry layer, and a 503 on it stopped the node
    fake.fail(503, kind="files.get")
    store = open_api(fake)
    assert store.calls["files.get"] == 2
    store.write("a.json", b"{}")
    assert store.read("a.json", 100) == b"{}"


def test_rejected_credentials_and_unshared_folders_are_clear(fake):
    fake.fail(401, "authError", kind="files.get")
    with pytest.raises(StoreError, match="rejected the credentials"):
        open_api(fake)
    with pytest.raises(StoreError, match="not found or not shared"):
        DriveApiStore.from_url("gdrive://NoSuchFolder123", endpoint=fake.url)
    with pytest.raises(StoreError, match="gdrive://<folder-id>"):
        DriveApiStore.from_url("gdrive://", endpoint=fake.url)


# --- a swarm on the Drive API ----------------------------------------------------------------

def area(label: str) -> str:
    """'experiments/exp/rollouts/round_1/w1.json' -> 'rollouts' (what a request was for)."""
    parts = label.split("/")
    if len(parts) >= 3 and parts[:2] == ["experiments", "exp"]:
        return parts[2].replace(".json", "")
    return "folders"


def test_swarm_runs_on_the_drive_api_with_calls_per_round_independent_of_peers(tiny_llama,
                                                                               tmp_path):
    rounds = 3
    with FakeDrive(list_lag=0.3) as fake:
        fake.fail_rate(0.02, 503)  # and 2% of all requests fail once: retried, never fatal
        env = node_env(f"gdrive://{fake.root_id}", tiny_llama, str(tmp_path / "home"),
                       GDRIVE_API_ENDPOINT=fake.url, MAX_ROUNDS=rounds)
        procs = [start_node(env, str(tmp_path / f"{n}.log"), role, n)
                 for role, n in (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))]
        try:
            codes = wait_all(procs, timeout=240)
        finally:
            logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace")
                    for n in ("coord", "w1", "w2")}
        assert codes == [0, 0, 0], {n: text[-3000:] for n, text in logs.items()}
        for name, text in logs.items():  # no client misuse, no crash along the way
            assert "Traceback" not in text and "positional argument" not in text, name
        fake.fail_rate(0.0)
        store = open_api(fake)
        state = json.loads(store.read("experiments/exp/state/current_state.json", 1 << 16))
        assert state["finished"] and state["round"] == rounds - 1
        for node in ("w1", "w2"):  # the workers did see each other's rollouts
            lines = store.read(f"experiments/exp/logs/{node}/metrics.jsonl", 1 << 20).splitlines()
            assert len(lines) == rounds
            assert sum(json.loads(x)["external/files_listed"] for x in lines) > 0, lines
        with fake.lock:
            log = list(fake.log)
    lines = [f"Drive API requests per worker per round (coordinator + 2 workers, {rounds} rounds, "
             f"HEARTBEAT_INTERVAL={env['HEARTBEAT_INTERVAL']}s POLL_INTERVAL="
             f"{env['POLL_INTERVAL']}s LOG_FLUSH_INTERVAL={env['LOG_FLUSH_INTERVAL']}s, "
             "NUM_TRANSPLANT_TREES=2, listing lag 0.3s; successful requests, counted by the "
             "fake server per x-rl-swarm-node header):"]
    exchange = {}
    for node in ("w1", "w2"):
        mine = [(kind, area(label)) for _, n, kind, label, status in log
                if n == node and status < 400]
        by_area, by_kind = {}, {}
        for kind, where in mine:
            by_area[where] = by_area.get(where, 0) + 1
            by_kind[kind] = by_kind.get(kind, 0) + 1
        exchange[node] = by_area.get("rollouts", 0) / rounds
        lines.append(f"  {node}: {len(mine) / rounds:.1f} per round in all; by area "
                     + ", ".join(f"{k} {v / rounds:.1f}" for k, v in sorted(by_area.items()))
                     + "; by method " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
    lines.append("  rollout exchange (publish + list + reads): "
                 + ", ".join(f"{n} {v:.1f}" for n, v in exchange.items()) + " per round; "
                 f"{sum(1 for *_, status in log if status >= 400)} injected failures retried "
                 "(all nodes)")
    report = "\n".join(lines)
    with open(CALLS_REPORT, "w") as fh:
        fh.write(report + "\n")
    print("\n" + report)
    # DESIGN: one listing plus about J reads per round, whatever the swarm's size. With J=2 a
    # worker reads at most J + 2 peer files (lookup + download each), lists round R (and R-1
    # when R is thin), and publishes its own file (folder lookups included): a bound without N.
    assert all(v <= 2 * (2 + 2) + 2 * 2 + 6 for v in exchange.values()), report
