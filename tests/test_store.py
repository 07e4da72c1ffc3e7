"""FolderStore and RetryingStore beyond the shared contract (test_store_contract.py):
torn writes, hard-link claims, error classes, read-only folders, retry policy."""

import errno
import os

import pytest

from rgym_exp.drive.store import (FolderStore, RetryingStore, StoreError, TransientStoreError,
                                  classify)


def test_a_failed_write_leaves_the_old_file_whole_and_no_temp_behind(drive):
    store = FolderStore(drive)
    store.write("x.json", b"old")

    def explode(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StoreError, match="the shared folder is full"):
        store._atomic("x.json", explode)
    assert store.read("x.json", 10) == b"old"
    assert os.listdir(drive) == ["x.json"]


def test_a_claim_leaves_no_temp_file_and_a_lost_claim_changes_nothing(drive):
    store = FolderStore(drive)
    assert store.create_exclusive("peers/.claims/w1.0", b"a")
    assert not store.create_exclusive("peers/.claims/w1.0", b"b")
    assert os.listdir(os.path.join(drive, "peers", ".claims")) == ["w1.0"]
    assert store.read("peers/.claims/w1.0", 10) == b"a"


def test_a_mount_without_hard_links_still_claims_by_look_then_rename(drive, monkeypatch, caplog):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    store = FolderStore(drive)
    assert store.create_exclusive("x.json", b"a") and not store.create_exclusive("x.json", b"b")
    assert store.create_exclusive("y.json", b"c")
    assert store.read("x.json", 10) == b"a" and sorted(os.listdir(drive)) == ["x.json", "y.json"]
    assert sum("cannot make hard links" in r.message for r in caplog.records) == 1


def test_errors_are_classified():
    assert isinstance(classify(OSError(errno.EIO, "I/O error"), "read", "p"), TransientStoreError)
    assert isinstance(classify(OSError(errno.ENOTCONN, "Transport endpoint is not connected"),
                               "read", "p"), TransientStoreError)
    err = classify(OSError(errno.EROFS, "Read-only file system"), "write", "p")
    assert not isinstance(err, TransientStoreError) and "read-only" in str(err) and "p" in str(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_folder_gives_a_clear_error(drive):
    store = FolderStore(drive)
    store.write("keep.json", b"1")
    os.chmod(drive, 0o555)
    try:
        with pytest.raises(StoreError, match="permission denied"):
            store.write("new.json", b"2")
    finally:
        os.chmod(drive, 0o755)
    assert store.read("keep.json", 10) == b"1"


class Flaky:
    description = "flaky"

    def __init__(self, failures, exc):
        self.failures, self.exc, self.calls = failures, exc, 0

    def read(self, path, max_bytes):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return b"ok"


def test_retrying_store_retries_transient_errors_then_succeeds():
    inner = Flaky(3, TransientStoreError("EIO"))
    store = RetryingStore(inner, attempts=5, sleep=lambda s: None)
    assert store.read("p", 10) == b"ok" and inner.calls == 4 and store.retries == 3


def test_retrying_store_gives_up_and_never_retries_permanent_errors():
    store = RetryingStore(Flaky(99, TransientStoreError("EIO")), attempts=3, sleep=lambda s: None)
    with pytest.raises(TransientStoreError):
        store.read("p", 10)
    permanent = Flaky(1, StoreError("disk full"))
    with pytest.raises(StoreError, match="disk full"):
        RetryingStore(permanent, sleep=lambda s: None).read("p", 10)
    assert permanent.calls == 1


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def test_one_operation_retries_for_at_most_its_time_budget():
    clock = Clock()
    store = RetryingStore(Flaky(10**6, TransientStoreError("EIO")), attempts=1000, budget_s=120,
                          sleep=clock.sleep, clock=clock)
    with pytest.raises(TransientStoreError):
        store.read("p", 10)
    assert clock.t <= 120 and store.inner.calls < 15


def test_a_mount_that_stays_disconnected_stops_the_node_with_how_to_remount():
    from rgym_exp.drive.store import Disconnected, MountLost
    clock = Clock()
    store = RetryingStore(Flaky(10**6, Disconnected("read p: Transport endpoint is not connected")),
                          sleep=clock.sleep, clock=clock)
    with pytest.raises(MountLost) as info:
        store.read("p", 10)
    text = str(info.value)
    assert "force_remount=True" in text and "same NODE_ID" in text and "\n" not in text
    assert not isinstance(info.value, StoreError)     # no reader takes it for a missing file
    healed = RetryingStore(Flaky(3, Disconnected("not connected")), sleep=clock.sleep, clock=clock)
    assert healed.read("p", 10) == b"ok"               # a blip is retried like any other


def test_enotconn_from_the_folder_is_a_disconnection(tmp_path, monkeypatch):
    import errno
    from rgym_exp.drive.store import Disconnected
    store = FolderStore(str(tmp_path))

    def gone(*args, **kwargs):
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
    monkeypatch.setattr("os.scandir", gone)
    with pytest.raises(Disconnected):
        store.list("peers")


def test_a_write_waits_for_a_round_folder_then_makes_it_after_the_wait(tmp_path):
    from rgym_exp.drive.layout import ROUND_FOLDERS
    from rgym_exp.drive.store import FolderWait
    clock = Clock()
    store = FolderStore(str(tmp_path), folder_wait=FolderWait(ROUND_FOLDERS, 90, clock))
    with pytest.raises(TransientStoreError, match="not visible yet"):
        store.write("exp/rollouts/round_3/w1.json", b"{}")
    assert not (tmp_path / "exp" / "rollouts" / "round_3").exists()
    store.write("exp/checkpoints/w1/round_3/model.bin", b"x")   # its own folders: made at once
    store.write("exp/logs/w1/stdout.log", b"x")
    clock.t += 91
    store.write("exp/rollouts/round_3/w1.json", b"{}")          # 90 s and no coordinator: made
    assert store.read("exp/rollouts/round_3/w1.json", 10) == b"{}"
    store.makedirs("exp/submissions/round_4")                   # the coordinator's, made ahead
    store.write("exp/submissions/round_4/w1.json", b"{}")


def test_an_only_copy_under_a_conflict_name_is_read_and_the_newest_of_several_wins(tmp_path):
    import os
    store = FolderStore(str(tmp_path))
    folder = tmp_path / "peers"
    folder.mkdir()
    (folder / "w1 (1).json").write_bytes(b"old")
    (folder / "w1 (2).json").write_bytes(b"new")
    os.utime(folder / "w1 (1).json", (1, 1))
    assert [e.name for e in store.list("peers")] == ["w1.json"]
    assert store.read("peers/w1.json", 10) == b"new"
    assert store.download("peers/w1.json", str(tmp_path / "copy"), 10)
    assert (tmp_path / "copy").read_bytes() == b"new"
    store.write("peers/w1.json", b"mine")                       # once the file is there, it wins
    assert store.read("peers/w1.json", 10) == b"mine"
    assert [e.name for e in store.list("peers")] == ["w1.json"]
