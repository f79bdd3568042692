"""nopelens.progress: bars and status lines on stderr, plain lines off a terminal, quiet."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from nopelens.progress import progress_bar, say


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_prints_nothing_and_still_iterates(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress_bar(range(4), desc="layers", quiet=True)) == [0, 1, 2, 3]
    with progress_bar(total=3, desc="steps", quiet=True) as bar:
        bar.update(3)
        bar.set_postfix_str("loss 0.1")
    say("loading", quiet=True)
    assert err.getvalue() == ""


def test_not_a_terminal_prints_plain_lines(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for _ in progress_bar(range(5), desc="analyze resid_post", unit="layer"):
        pass
    text = err.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("analyze resid_post:   0% 0/5")
    assert lines[-1].startswith("analyze resid_post: 100% 5/5")
    assert len(lines) == len(set(lines)) <= 6  # no repeated or blank lines
    assert text.endswith("\n")


def test_manual_updates_without_total(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress_bar(desc="probe", unit="fit")
    bar.update(2)
    bar.close()
    last = err.getvalue().splitlines()[-1]
    assert last.startswith("probe: 2fit"), last


def test_a_terminal_gets_a_redrawn_bar(monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    for _ in progress_bar(range(3), desc="train", unit="step"):
        pass
    assert "\r" in err.getvalue()
    assert "3/3" in err.getvalue()


def test_say_writes_one_line_to_stderr(capsys):
    say("loading model gpt2 ...")
    say("already ends in a newline\n")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "loading model gpt2 ...\nalready ends in a newline\n"


@pytest.mark.parametrize("code", ["import nopelens.progress", "import nopelens.cli.vocabulary"])
def test_progress_is_light(code):
    """No torch, no tqdm.auto (whose notebook import warns about IProgress)."""
    heavy = "('torch', 'tqdm.auto', 'ipywidgets')"
    check = f"{code}; import sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_quiet_flag():
    import argparse

    from nopelens.cli.vocabulary import add_quiet_argument

    parser = argparse.ArgumentParser()
    add_quiet_argument(parser)
    assert parser.parse_args(["--quiet"]).quiet and parser.parse_args(["-q"]).quiet
    assert parser.parse_args([]).quiet is False


def test_log_progress_counts_records_and_keeps_louder_ones(monkeypatch, caplog):
    import logging

    from nopelens.progress import log_progress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    log = logging.getLogger("nopelens.test_progress_lib")
    before = (log.level, log.propagate)
    with caplog.at_level(logging.WARNING):
        with log_progress(log.name, desc="probe", unit="layer", total=3) as bar:
            for layer in range(3):
                log.info("probing layer %d", layer)
            log.warning("a real warning")
    assert bar.n == 3
    assert err.getvalue().splitlines()[-1].startswith("probe: 100% 3/3")
    # the INFO lines moved the bar only; the warning still reached the usual handlers
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]
    assert (log.level, log.propagate) == before


def test_log_progress_quiet(monkeypatch):
    import logging

    from nopelens.progress import log_progress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with log_progress("nopelens.test_progress_lib", desc="x", quiet=True):
        logging.getLogger("nopelens.test_progress_lib").info("step")
    assert err.getvalue() == ""


def test_log_progress_takes_its_total_from_the_library(monkeypatch):
    """A record with ``progress_total`` sets the total; it does not count as a unit."""
    import logging

    from nopelens.progress import log_progress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # not a terminal: plain lines
    log = logging.getLogger("nopelens.test_progress_lib")
    with log_progress(log.name, desc="probe", unit="layer") as bar:
        log.info("%d layers to probe", 2, extra={"progress_total": 2})
        log.info("probing layer 0")
        log.info("probing layer 1")
    assert (bar.n, bar.total) == (2, 2)
    assert err.getvalue().splitlines()[-1].startswith("probe: 100% 2/2")
