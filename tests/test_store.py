"""FolderStore and RetryingStore: atomic writes, caps, hidden names, clear errors."""

import errno
import os

import pytest

from rgym_exp.drive.store import (FolderStore, RetryingStore, StoreError, TooLarge,
                                  TransientStoreError, check_path, classify, visible_name)


def test_write_read_list_delete_move(drive):
    store = FolderStore(drive)
    store.write("a/b/c.json", b"{}")
    assert store.read("a/b/c.json", 10) == b"{}"
    assert store.read("a/b/missing.json", 10) is None
    assert [e.name for e in store.list("a/b")] == ["c.json"]
    assert store.list("nowhere") == []
    store.move("a/b", "archive/b")
    assert store.read("archive/b/c.json", 10) == b"{}" and store.list("a/b") == []
    store.delete("archive")
    assert store.list("archive") == []
    store.delete("archive")  # deleting what is gone is fine


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


def test_reads_are_capped(drive):
    store = FolderStore(drive)
    store.write("big.json", b"x" * 100)
    with pytest.raises(TooLarge):
        store.read("big.json", 99)
    assert store.read("big.json", 100) == b"x" * 100
    with pytest.raises(TooLarge):
        store.download("big.json", os.path.join(drive, "..", "copy"), 50)


@pytest.mark.parametrize("name, visible", [
    ("w1.json", True), (".w1.json.tmp-1234", False), ("w1 (1).json", False),
    ("state (12).json", False), ("round_3", True), ("", False),
])
def test_temp_files_and_conflict_copies_are_hidden(name, visible):
    assert visible_name(name) == visible


def test_listing_hides_temp_and_conflict_copies(drive):
    store = FolderStore(drive)
    store.write("r/w1.json", b"1")
    for junk in (".w2.json.tmp-abc", "w1 (1).json"):
        with open(os.path.join(drive, "r", junk), "w") as fh:
            fh.write("junk")
    assert [e.name for e in store.list("r")] == ["w1.json"]


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", "", "a/./b",
                                  "a/\x00"])
def test_paths_that_could_leave_the_folder_are_refused(drive, path):
    with pytest.raises(StoreError, match="unsafe"):
        check_path(path)
    with pytest.raises(StoreError):
        FolderStore(drive).write(path, b"x")


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
