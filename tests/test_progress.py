"""Progress display: tqdm when someone watches, plain periodic log lines in files."""

import logging

from rgym_exp import progress as progress_mod
from rgym_exp.progress import LogProgress, progress


def test_in_a_log_file_progress_is_plain_lines_without_carriage_returns(caplog, monkeypatch):
    monkeypatch.setattr(progress_mod, "interactive", lambda: False)
    with caplog.at_level(logging.INFO, logger="rgym_exp.progress"):
        with progress(4, "round 3 generating", "steps", every=0.0) as bar:
            assert isinstance(bar, LogProgress)
            for _ in range(4):
                bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "round 3 generating: 1 steps of 4 steps (25%, 0s)"
    assert lines[-1].startswith("round 3 generating: done, 4 steps in")
    assert not any("\r" in line for line in lines)


def test_byte_counts_read_as_megabytes(caplog):
    with caplog.at_level(logging.INFO, logger="rgym_exp.progress"):
        with LogProgress(3e6, "checkpoint round 9", "B", every=0.0) as bar:
            bar.update(1e6)
    assert caplog.records[0].getMessage() == "checkpoint round 9: 1.0 MB of 3.0 MB (33%, 0s)"


def test_interactive_sessions_get_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(progress_mod, "interactive", lambda: True)
    with progress(2, "x", "steps") as bar:
        bar.update(2)
    assert type(bar).__module__.startswith("tqdm")
