"""Every `nopelens ...` command shown in README.md and docs/*.md parses with today's CLI.

Commands in code blocks (fenced or indented; ``$ `` prompts, ``\\`` continuations and ``#``
comments allowed) are parsed in full by the real parser (flags, types, choices, required
arguments), without being run. Inline code spans that hold a command with flags are checked
flag by flag, since they often show only part of a command.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
#: `nopelens COMMAND ...` (or `python -m nopelens ...`); COMMAND is a plain word, so printed
#: output such as "nopelens train: error: ..." is not taken for a command.
_COMMAND = re.compile(r"^(?:\$\s+)?(?:python -m )?nopelens(?:$|\s+(?![\w-]+:))")
_INLINE = re.compile(r"`((?:python -m )?nopelens [^`]*--[^`]*)`", re.S)


def _block_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of each `nopelens` line in a fenced or indented code block."""
    found: list[tuple[int, str]] = []
    fenced = False
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.lstrip().startswith("```"):
            fenced = not fenced
            index += 1
            continue
        indented = line.startswith("    ") and not line.lstrip().startswith(("-", "*"))
        match = _COMMAND.match(line.strip()) if (fenced or indented) else None
        start = index
        if match:
            command = line.strip()
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1] + " " + lines[index].strip()
            found.append((start + 1, command))
        index += 1
    return found


def _inline_commands(text: str) -> list[tuple[int, str]]:
    return [
        (text[: m.start()].count("\n") + 1, " ".join(m.group(1).split()))
        for m in _INLINE.finditer(text)
    ]


def _argv(command: str) -> list[str]:
    words = shlex.split(re.sub(r"^\$\s+", "", command), comments=True)
    return words[3:] if words[:2] == ["python", "-m"] else words[1:]


def _cases() -> list[tuple[str, str, bool]]:
    cases = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        for line, command in _block_commands(text):
            cases.append((f"{name}:{line}", command, True))
        for line, command in _inline_commands(text):
            cases.append((f"{name}:{line}", command, False))
    return cases


CASES = _cases()


def _subparsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from nopelens.cli.app import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(action.choices)


def test_the_pages_show_commands():
    assert len([c for c in CASES if c[2]]) >= 10, CASES


@pytest.mark.parametrize(("where", "command", "whole"), CASES, ids=[c[0] for c in CASES])
def test_a_documented_command_parses(where, command, whole, capsys):
    parser, commands = _subparsers()
    argv = _argv(command)
    if not argv or argv[0].startswith("-") or argv[0].isupper():
        return  # `nopelens --help`, `nopelens --version`, `nopelens COMMAND --help`
    assert argv[0] in commands, f"{where}: no command {argv[0]!r} in `{command}`"
    if whole:
        try:
            parser.parse_args(argv)
        except SystemExit as stop:
            error = capsys.readouterr().err.strip().splitlines()[-1:]
            assert stop.code == 0, f"{where}: `{command}` does not parse: {error}"
        return
    from nopelens.cli.vocabulary import option_table

    known = set(option_table(commands[argv[0]]))  # retired spellings are not known
    flags = [word.split("=")[0] for word in argv[1:] if word.startswith("--")]
    unknown = [flag for flag in flags if flag not in known]
    assert unknown == [], f"{where}: `{command}` uses unknown flags {unknown}"
