"""Every expected CLI failure is one line on stderr with exit code 2 (130 for Ctrl-C), never a
traceback; ``--debug`` shows the traceback."""

from __future__ import annotations

import errno

import pytest

TINY = ["--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--d-vocab", "20", "--n-ctx", "8"]
#: Quiet: stderr then holds the error line alone.
ANALYZE = ["analyze", *TINY, "--n-seqs", "4", "--seq-len", "6", "--n-bootstrap", "10", "-q"]


def _run(capsys, argv):
    from nopelens.cli.app import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err, *needles):
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_missing_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _run(capsys, [*ANALYZE, "--device", "cuda"])
    assert code == 2
    _one_line(err, "CUDA is not available")


def test_a_folder_where_a_file_is_expected(tmp_path, capsys):
    code, err = _run(capsys, [*ANALYZE, "--out", str(tmp_path)])
    assert code == 2
    _one_line(err, str(tmp_path))


def test_a_file_where_a_folder_is_expected(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run(capsys, [*ANALYZE, "--out", str(blocker / "scores.csv")])
    assert code == 2
    _one_line(err, "file")


def test_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    import nopelens.files as files

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    code, err = _run(capsys, [*ANALYZE, "--out", str(tmp_path / "s.csv")])
    assert code == 2
    _one_line(err, "no space left", "s.csv")


def test_permission_denied_is_one_line(tmp_path, capsys, monkeypatch):
    import nopelens.files as files

    def denied(path, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files, "atomic_write_bytes", denied)
    code, err = _run(capsys, [*ANALYZE, "--out", str(tmp_path / "s.csv")])
    assert code == 2
    _one_line(err, "permission denied", "s.csv")


def test_out_of_memory_is_one_line(capsys, monkeypatch):
    import nopelens.analyzer as measure

    def oom(*args, **kwargs):
        raise MemoryError("Unable to allocate 16.0 GiB")

    monkeypatch.setattr(measure, "analyze", oom)
    code, err = _run(capsys, ANALYZE)
    assert code == 2
    _one_line(err, "out of memory", "16.0 GiB")


def test_malformed_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, err = _run(capsys, ["analyze", "--model", str(bad), "-q"])
    assert code == 2
    _one_line(err, "bad.pt", "not a readable nopelens checkpoint")


def test_a_bug_still_shows_its_traceback(capsys, monkeypatch):
    import nopelens.analyzer as measure

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a real bug")

    monkeypatch.setattr(measure, "analyze", bug)
    from nopelens.cli.app import main

    with pytest.raises(ZeroDivisionError):
        main(ANALYZE)


def test_debug_shows_the_traceback_of_an_expected_failure(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from nopelens.cli.app import main

    with pytest.raises(ValueError, match="CUDA"):
        main(["--debug", *ANALYZE, "--device", "cuda"])


@pytest.mark.usefixtures("one_torch_thread")
def test_ctrl_c_in_train_saves_then_exits_130(tmp_path, capsys, monkeypatch, tiny_train):
    from nopelens.training import loop

    real = loop.evaluate
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the evaluation after step 3 (steps 0 and 3 have two splits)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", interrupted)
    argv = ["train", "parity", "--out", str(tmp_path / "run"), *tiny_train]
    code, err = _run(capsys, argv)
    assert code == 130
    _one_line(err, "interrupted")
    assert (tmp_path / "run" / "checkpoint.pt").exists()
