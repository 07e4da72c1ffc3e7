"""The Store contract, one suite over every store (store.py's docstring lists the promises).

Stores: a local folder (FolderStore), the Drive API (DriveApiStore against the fake
Drive server), an S3 bucket (FsspecStore against moto in server mode), memory://
(FsspecStore in this process), and the fault-injecting wrapper (FaultyStore over a
folder, 30% transient I/O errors). Each runs under RetryingStore, as nodes use them.
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from rgym_exp.drive.faults import Faults, FaultyStore
from rgym_exp.drive.store import (FolderStore, RetryingStore, StoreError, TooLarge,
                                  TransientStoreError, visible_name)

KINDS = ["folder", "drive", "s3", "memory", "faulty"]


@dataclass
class Backend:
    kind: str
    store: RetryingStore        # what nodes use
    raw: object                 # the store itself, without retries
    outage: object              # outage(): the next listing fails as if the service hiccuped
    other: object               # other(): another process's store on the same location
    atomic_create: bool = True  # create_exclusive is atomic between processes (not Drive)


def fail_next(obj, name: str, n: int, exc: BaseException):
    """Make ``obj.name`` raise ``exc`` on its next ``n`` calls."""
    @contextmanager
    def outage():
        real, left = getattr(obj, name), [n]

        def flaky(*args, **kwargs):
            if left[0] > 0:
                left[0] -= 1
                raise exc
            return real(*args, **kwargs)
        setattr(obj, name, flaky)
        try:
            yield
        finally:
            setattr(obj, name, real)
    return outage


@pytest.fixture(params=KINDS)
def backend(request, tmp_path, monkeypatch):
    kind, noop = request.param, (lambda s: None)
    if kind == "folder":
        raw = FolderStore(str(tmp_path / "drive"))
        outage = fail_next(os, "scandir", 1, OSError(errno.EIO, "Input/output error"))
        yield Backend(kind, RetryingStore(raw, sleep=noop), raw, outage,
                      lambda: FolderStore(raw.root))
    elif kind == "drive":
        from rgym_exp.drive.drive_api import DriveApiStore
        from tests.fake_drive import FakeDrive
        with FakeDrive() as fake:
            fake.full_pages = False   # Drive's partial pages, always
            raw = DriveApiStore.from_url(f"gdrive://{fake.root_id}", endpoint=fake.url)

            @contextmanager
            def outage():  # the API store does not retry: RetryingStore is the one layer
                fake.fail(503, count=1, kind="files.list")
                yield
            yield Backend(kind, RetryingStore(raw, sleep=noop), raw, outage,
                          lambda: DriveApiStore.from_url(f"gdrive://{fake.root_id}",
                                                         endpoint=fake.url),
                          atomic_create=False)
    elif kind in ("s3", "memory"):
        from rgym_exp.drive.backends import open_store
        if kind == "s3":
            from tests.s3_server import new_bucket, s3_endpoint, s3_env
            endpoint = s3_endpoint()
            for key, value in s3_env(endpoint).items():
                monkeypatch.setenv(key, value)
            url = f"s3://{new_bucket(endpoint)}/swarm"
        else:
            url = f"memory://contract-{uuid.uuid4().hex}"
        store = open_store(url)
        store.sleep = noop
        raw = store.inner
        from botocore.exceptions import EndpointConnectionError
        outage = fail_next(raw.fs, "ls", 1, EndpointConnectionError(endpoint_url="http://x"))
        yield Backend(kind, store, raw, outage, lambda: open_store(url))
        if kind == "memory":
            for leftover in raw.fs.find(raw.root):  # memory:// is shared by the process
                raw.fs.rm_file(leftover)
    else:
        raw = FaultyStore(FolderStore(str(tmp_path / "drive")), Faults(io_error=0.3, seed=7))
        outage = fail_next(raw, "_io_error", 1, TransientStoreError("list: I/O error (injected)"))
        yield Backend(kind, RetryingStore(raw, attempts=12, sleep=noop), raw, outage,
                      lambda: RetryingStore(FaultyStore(FolderStore(raw.inner.root),
                                                        Faults(io_error=0.3, seed=8)),
                                            attempts=12, sleep=noop))


# --- whole files --------------------------------------------------------------------------

def test_what_is_written_reads_back_whole_and_a_missing_file_reads_none(backend):
    store = backend.store
    for data in (b'{"round": 1}', b"", bytes(range(256)) * 4 + b"\r\n\n--x"):
        store.write("experiments/x/state/current_state.json", data)
        assert store.read("experiments/x/state/current_state.json", 1 << 20) == data
    store.write("experiments/x/state/current_state.json", b"short")  # a shorter file replaces all
    assert store.read("experiments/x/state/current_state.json", 100) == b"short"
    assert store.read("experiments/x/state/other.json", 100) is None
    assert store.read("experiments/nothing/here.json", 100) is None
    assert store.read("experiments/x/state", 100) is None  # a folder is no file


def test_reads_and_downloads_past_the_cap_raise_too_large(backend, tmp_path):
    store = backend.store
    store.write("big.json", b"x" * 100)
    with pytest.raises(TooLarge):
        store.read("big.json", 99)
    assert store.read("big.json", 100) == b"x" * 100
    with pytest.raises(TooLarge):
        store.download("big.json", str(tmp_path / "copy"), 50)
    assert not (tmp_path / "copy").exists() and not (tmp_path / "copy.part").exists()


def test_upload_and_download_whole_files(backend, tmp_path):
    store = backend.store
    src = tmp_path / "weights.safetensors"
    src.write_bytes(os.urandom(3000))
    store.upload(str(src), "ck/w1/round_0/weights.safetensors")
    dst = tmp_path / "back.safetensors"
    assert store.download("ck/w1/round_0/weights.safetensors", str(dst), 10_000)
    assert dst.read_bytes() == src.read_bytes()
    assert not store.download("ck/w1/round_0/missing.bin", str(dst), 10_000)
    assert dst.read_bytes() == src.read_bytes()  # a failed download leaves the old copy


# --- listings -------------------------------------------------------------------------------

def test_listing_names_sizes_and_folders_in_order(backend):
    store = backend.store
    store.write("a/b/c/one.json", b"1")
    store.write("a/b/three.json", b"333")
    store.write("a/b/two.json", b"22")
    assert [(e.name, e.is_dir) for e in store.list("a/b")] == [
        ("c", True), ("three.json", False), ("two.json", False)]
    assert [e.size for e in store.list("a/b") if not e.is_dir] == [3, 2]
    assert store.list("no/such/folder") == []
    assert store.list("a/b/three.json") == []  # a file is no folder


def test_listing_hides_temporary_files_and_conflict_copies_of_files_that_are_there(backend):
    store = backend.store
    for name in ("w1.json", ".w2.json.tmp-1234", "w1 (1).json", "state.json", "state (12).json",
                 ".hidden"):
        store.write(f"peers/{name}", b"{}")
    assert [e.name for e in store.list("peers")] == ["state.json", "w1.json"]


def test_a_conflict_copy_that_is_the_only_copy_is_listed_and_read_as_the_file(backend):
    # a mount that synced a node's file as 'w3 (1).json' must not make that file vanish;
    # buckets never make conflict copies, so there they are just hidden names
    store = backend.store
    store.write("peers/w3 (1).json", b"copy")
    store.makedirs("peers/round_2 (1)")
    if backend.kind in ("s3", "memory"):
        assert store.list("peers") == []
        return
    assert [e.name for e in store.list("peers")] == ["w3.json"]   # folders' copies stay hidden
    assert store.read("peers/w3.json", 10) == b"copy"             # Drive API: via the listing


def test_another_process_sees_new_files_and_new_content_at_once(backend):
    store, other = backend.store, backend.other()
    store.write("rollouts/round_0/w1.json", b"1")
    assert [e.name for e in other.list("rollouts/round_0")] == ["w1.json"]
    store.write("rollouts/round_0/w2.json", b"2")   # listed before: no stale listing after
    store.write("rollouts/round_0/w1.json", b"11")
    assert [e.name for e in other.list("rollouts/round_0")] == ["w1.json", "w2.json"]
    assert other.read("rollouts/round_0/w1.json", 10) == b"11"


@pytest.mark.parametrize("name, visible", [
    ("w1.json", True), (".w1.json.tmp-1234", False), ("w1 (1).json", False),
    ("state (12).json", False), ("round_3", True), ("", False),
])
def test_temp_names_and_conflict_copies_are_not_visible_names(name, visible):
    assert visible_name(name) == visible


# --- delete, move, folders ------------------------------------------------------------------

def test_delete_removes_a_file_or_a_tree_and_never_a_longer_name(backend):
    store = backend.store
    for p in ("ck/round_1/a.bin", "ck/round_1/sub/b.bin", "ck/round_10/a.bin", "ck/round_2/a.bin"):
        store.write(p, b"data")
    store.delete("ck/round_1")
    assert [e.name for e in store.list("ck")] == ["round_10", "round_2"]
    assert store.read("ck/round_1/a.bin", 10) is None
    assert store.read("ck/round_10/a.bin", 10) == b"data"
    store.delete("ck/round_1")        # what is gone: nothing to do
    store.delete("ck/round_2/a.bin")
    assert store.list("ck/round_2") == [] and store.read("ck/round_2/a.bin", 10) is None


def test_move_archives_a_round_folder_and_only_that(backend):
    store = backend.store
    store.write("exp/rollouts/round_1/w1.json", b"r1")
    store.write("exp/rollouts/round_1/w2.json", b"r2")
    store.write("exp/rollouts/round_12/w1.json", b"r12")
    store.move("exp/rollouts/round_1", "exp/archive/rollouts/round_1")
    assert [e.name for e in store.list("exp/rollouts")] == ["round_12"]
    assert [e.name for e in store.list("exp/archive/rollouts/round_1")] == ["w1.json", "w2.json"]
    assert store.read("exp/archive/rollouts/round_1/w2.json", 10) == b"r2"
    assert store.read("exp/rollouts/round_12/w1.json", 10) == b"r12"
    store.move("exp/rollouts/round_9", "exp/archive/rollouts/round_9")  # missing: nothing to do
    assert store.list("exp/archive/rollouts/round_9") == []


def test_makedirs_is_harmless_and_writes_need_no_folder_first(backend):
    store = backend.store
    store.makedirs("exp/rollouts/round_3")
    store.makedirs("exp/rollouts/round_3")
    store.write("exp/rollouts/round_3/w1.json", b"{}")
    store.write("exp/fresh/deep/folder/f.json", b"{}")
    assert [e.name for e in store.list("exp/rollouts/round_3")] == ["w1.json"]
    assert store.read("exp/fresh/deep/folder/f.json", 10) == b"{}"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", "", "a/./b",
                                  "a/\x00"])
def test_paths_that_could_leave_the_store_are_refused(backend, path, tmp_path):
    store = backend.store
    calls = [lambda: store.write(path, b"x"), lambda: store.read(path, 10),
             lambda: store.list(path), lambda: store.delete(path),
             lambda: store.move("ok.json", path), lambda: store.create_exclusive(path, b"x"),
             lambda: store.download(path, str(tmp_path / "d"), 10)]
    for call in calls:
        with pytest.raises(StoreError):
            call()


# --- one-writer claims ----------------------------------------------------------------------

def test_create_exclusive_writes_only_where_nothing_is(backend):
    store = backend.store
    assert store.create_exclusive("exp/peers/.claims/w1.0", b"session-a")
    assert not store.create_exclusive("exp/peers/.claims/w1.0", b"session-b")
    assert store.read("exp/peers/.claims/w1.0", 100) == b"session-a"
    # the same bytes again: an earlier try of this very claim landed, so it is ours
    assert store.create_exclusive("exp/peers/.claims/w1.0", b"session-a")
    store.write("exp/experiment.json", b"{}")
    assert not store.create_exclusive("exp/experiment.json", b'{"x": 1}')
    assert store.read("exp/experiment.json", 100) == b"{}"


def test_of_racing_claims_exactly_one_wins(backend):
    if not backend.atomic_create:
        pytest.skip("Drive has no create-if-absent: claims there are best effort (documented)")
    wins, errors = [], []

    def claim(k):
        try:
            wins.append(backend.store.create_exclusive("exp/peers/.claims/w7.3", f"s{k}".encode()))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=claim, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(wins) == [False] * 7 + [True]


# --- failures -------------------------------------------------------------------------------

def test_a_passing_failure_is_transient_and_retried(backend):
    backend.store.write("peers/w1.json", b"{}")
    with backend.outage():
        with pytest.raises(TransientStoreError):
            backend.raw.list("peers")
    retries = backend.store.retries
    with backend.outage():
        assert [e.name for e in backend.store.list("peers")] == ["w1.json"]
    if backend.kind == "faulty":  # its own random faults may add retries
        assert backend.store.retries >= retries + 1
    else:
        assert backend.store.retries == retries + 1


def test_store_is_a_leaf_and_the_table_imports_no_client_library():
    import subprocess
    import sys
    code = ("import sys, rgym_exp.drive.store as s; a = sorted(m for m in sys.modules if "
            "m.startswith('rgym_exp.') and m != 'rgym_exp.drive.store' and m != 'rgym_exp.drive'); "
            "import rgym_exp.drive.backends; "
            "b = sorted(m for m in ('s3fs', 'gcsfs', 'botocore', 'googleapiclient', 'fsspec') "
            "if m in sys.modules); print(a, b)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[] []", out.stdout
