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
