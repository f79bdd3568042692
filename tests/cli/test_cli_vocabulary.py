"""One CLI vocabulary: the same flag for the same concept in every subcommand."""

from __future__ import annotations

import argparse

import pytest

#: Flags whose default may differ by subcommand (a command-specific amount, same meaning).
PER_COMMAND_DEFAULTS = {"--n-seqs", "--sites", "--out", "--n-ctx", "--n-bootstrap", "--batch-size"}


def _subparsers():
    from nopelens.cli.app import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_no_retired_synonym_is_back():
    from nopelens.cli.vocabulary import SYNONYMS, option_table

    for name, sub in _subparsers().items():
        for flag in option_table(sub):
            assert flag not in SYNONYMS, f"nopelens {name} uses {flag}; use {SYNONYMS[flag]}"


def test_a_flag_means_one_thing_everywhere():
    from nopelens.cli.vocabulary import option_table

    seen: dict[str, tuple[str, dict]] = {}
    for name, sub in _subparsers().items():
        for flag, info in option_table(sub).items():
            if flag in ("--help",):
                continue
            if flag in seen:
                first, other = seen[flag]
                for key in ("dest", "type", "nargs", "choices"):
                    assert info[key] == other[key], (flag, key, first, name)
                # None means "fit the context" (a task's recommendation, the model's n_ctx)
                contextual = None in (info["default"], other["default"])
                if flag not in PER_COMMAND_DEFAULTS and not contextual:
                    assert info["default"] == other["default"], (flag, first, name)
            else:
                seen[flag] = (name, info)


def test_every_command_has_quiet_and_verbose():
    for name, sub in _subparsers().items():
        flags = {s for action in sub._actions for s in action.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, name
        quiet = next(a for a in sub._actions if "-q" in a.option_strings)
        assert (quiet.dest, quiet.default) == ("quiet", False), name


def test_token_flags_are_shared_by_every_command_that_draws_tokens():
    from nopelens.cli.vocabulary import option_table

    for name in ("analyze", "theory", "probe", "dashboard"):
        flags = option_table(_subparsers()[name])
        for flag in ("--n-seqs", "--seq-len", "--data-seed", "--distinct", "--batch-size"):
            assert flag in flags, (name, flag)


@pytest.mark.parametrize("name", ["analyze", "theory", "probe", "dashboard", "train", "sweep"])
def test_help_shows_defaults_and_choices(name):
    text = _subparsers()[name].format_help()
    assert "(default:" in text
    if name != "sweep":
        assert "{none,learned,rotary,alibi}" in text


def test_sites_accept_spaces_and_commas():
    from nopelens.cli.vocabulary import flatten

    sub = _subparsers()["probe"]
    a = sub.parse_args(["--sites", "resid_post", "attn_out"])
    b = sub.parse_args(["--sites", "resid_post,attn_out"])
    assert flatten(a.sites) == flatten(b.sites) == ["resid_post", "attn_out"]


def test_errors_name_the_flag(capsys):
    from nopelens.cli.app import main

    code = main(["theory", "--n-layers", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--n-layers option must be an int >= 1" in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["probe", "--pos", "32"], "--pos is now --seq-len"),
        (["theory", "--batch", "64"], "--batch is now --n-seqs"),
        (["analyze", "--tokens-seed", "1"], "--tokens-seed is now --data-seed"),
        (["train", "parity", "--out", "x", "--no-progress"], "--no-progress is now --quiet"),
        (["sweep", "--no-progress"], "--no-progress is now --quiet"),
    ],
)
def test_a_retired_spelling_names_its_replacement(argv, message, capsys):
    from nopelens.cli.app import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().endswith(message)


def test_no_flag_is_abbreviated(capsys):
    """`--pos` must not quietly mean `--positional`, nor `--batch` mean `--batch-size`."""
    from nopelens.cli.app import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["analyze", "--posit", "learned"])
    assert "unrecognized arguments: --posit" in capsys.readouterr().err


def test_verbose_goes_before_or_after_the_command():
    from nopelens.cli.app import build_parser

    parser = build_parser()
    assert parser.parse_args(["-v", "probe"]).verbose
    assert parser.parse_args(["probe", "-v"]).verbose
    assert not parser.parse_args(["probe"]).verbose
