"""cli.common: --model sources, --dtype, stripping, and the inputs each kind of model gets."""

from __future__ import annotations

import argparse
import shutil
import warnings

import pytest
import torch


def parse(*argv):
    from nopelens.cli.common import add_input_arguments, add_load_arguments, add_model_arguments
    from nopelens.cli.vocabulary import add_token_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, n_ctx=32)
    add_load_arguments(parser)
    add_input_arguments(parser)
    add_token_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from nopelens.models import write_tiny_hf_model

    return write_tiny_hf_model(tmp_path_factory.mktemp("hf") / "llama", n_ctx=64)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, tiny_train):
    from nopelens.cli.app import main

    out = tmp_path_factory.mktemp("run") / "parity"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["train", "parity", "--out", str(out), "--task-arg", "length=4",
                     *tiny_train]) == 0  # fmt: skip
    return out


def test_a_random_init_model_reads_random_tokens():
    from nopelens.cli.common import model_from_args, tokens_from_args

    args = parse("--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--d-vocab", "20",
                 "--n-seqs", "5", "--seq-len", "8", "--data-seed", "2", "--distinct")  # fmt: skip
    model = model_from_args(args)
    inputs = tokens_from_args(args, model)
    assert inputs.kind == "random" and inputs.tokens.shape == (5, 8)
    assert all(len(set(row.tolist())) == 8 for row in inputs.tokens)
    assert "5 random sequences x 8 tokens (seed 2, distinct tokens)" == inputs.description


def test_a_hybrid_is_built_from_flags_and_a_loaded_rotary_model_is_stripped(hf_folder):
    from nopelens.cli.common import model_from_args
    from nopelens.models import is_nope, nope_layers

    built = model_from_args(parse("--n-layers", "3", "--positional", "rotary",
                                  "--nope-layers", "0,2"))  # fmt: skip
    assert nope_layers(built) == (0, 2)
    loaded = model_from_args(parse("--model", str(hf_folder), "--nope-layers", "1"))
    assert nope_layers(loaded) == (1,)
    assert is_nope(model_from_args(parse("--model", str(hf_folder), "--strip-positional")))


def test_a_model_with_a_tokenizer_reads_the_standard_library_by_default(hf_folder):
    from nopelens.cli.common import model_from_args, tokens_from_args

    args = parse(
        "--model", str(hf_folder), "--dtype", "bfloat16", "--n-seqs", "20", "--seq-len", "16"
    )
    model = model_from_args(args)
    assert model.cfg.dtype == torch.bfloat16
    inputs = tokens_from_args(args, model)
    assert inputs.kind == "text" and inputs.tokens.shape == (20, 16)
    assert (inputs.tokens[:, 0] == model.tokenizer.bos_token_id).all()
    assert "standard library" in inputs.description and "BOS prepended" in inputs.description
    assert "the default" in inputs.description
    no_bos = tokens_from_args(parse("--model", str(hf_folder), "--no-bos", "--n-seqs", "20",
                                    "--seq-len", "16"), model)  # fmt: skip
    assert (no_bos.tokens[:, 0] != model.tokenizer.bos_token_id).any()
    forced = tokens_from_args(parse("--model", str(hf_folder), "--random-tokens", "--n-seqs", "4",
                                    "--seq-len", "16"), model)  # fmt: skip
    assert forced.kind == "random"


def test_text_from_a_file_and_from_a_folder(hf_folder, tmp_path):
    from nopelens.cli.common import model_from_args, tokens_from_args

    model = model_from_args(parse("--model", str(hf_folder)))
    (tmp_path / "a.txt").write_text("def f(x):\n    return x + 1\n" * 40)
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    window = ("--n-seqs", "8", "--seq-len", "10")
    one = tokens_from_args(parse("--text", str(tmp_path / "a.txt"), *window), model)
    both = tokens_from_args(parse("--text", str(tmp_path), *window), model)
    assert torch.equal(one.tokens, both.tokens) and one.kind == "text"
    short = tokens_from_args(parse("--text", str(tmp_path / "a.txt"), "--n-seqs", "10000",
                                   "--seq-len", "10"), model)  # fmt: skip
    assert f"the text holds only {len(short.tokens)}" in short.description


def test_a_training_run_is_analysed_on_its_own_task(train_run):
    from nopelens.cli.common import model_from_args, task_of_args, tokens_from_args
    from nopelens.training import get_task

    for source in (train_run, train_run / "final.pt", train_run / "initial.pt"):
        args = parse("--model", str(source), "--n-seqs", "6", "--data-seed", "1")
        model = model_from_args(args)
        inputs = tokens_from_args(args, model)
        expected = get_task("parity", length=4).sample(6, split="test", generator=1).tokens
        assert inputs.kind == "task" and torch.equal(inputs.tokens, expected)
        assert "test examples of task 'parity'" in inputs.description
        assert task_of_args(args).name == "parity"
    with pytest.raises(ValueError, match=r"'--seq-len' option \(32\) does not fit .*'parity'"):
        tokens_from_args(parse("--model", str(source), "--seq-len", "32"), model)
    args = parse("--model", str(train_run), "--random-tokens", "--n-seqs", "3")
    forced = tokens_from_args(args, model_from_args(args))
    assert forced.kind == "random" and forced.tokens.shape == (3, 7)  # 32 capped by n_ctx 7


def test_an_unfinished_training_run_says_so(train_run, tmp_path):
    from nopelens.cli.common import model_from_args

    run = shutil.copytree(train_run, tmp_path / "run")
    (run / "final.pt").unlink()
    with pytest.raises(ValueError, match="has not finished.*initial.pt"):
        model_from_args(parse("--model", str(run)))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model", "gpt-2"], r"no such file or folder, and not a TransformerLens model name"),
        (["--dtype", "float16", "--device", "cuda:7"], r"'--device' option is 'cuda:7'"),
        (["--strip-positional", "--nope-layers", "1"], r"Pass one of them"),
        (["--positional", "none", "--nope-layers", "1"], r"cannot be used with positional='none'"),
    ],
)
def test_bad_model_flags_give_one_clear_sentence(argv, match):
    from nopelens.cli.common import model_from_args

    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ValueError, match=match):
        model_from_args(parse(*argv))


def test_a_folder_without_config_json_is_refused(tmp_path):
    from nopelens.cli.common import model_from_args

    with pytest.raises(ValueError, match="has no config.json"):
        model_from_args(parse("--model", str(tmp_path)))


def test_text_needs_a_tokenizer_and_excludes_random_tokens():
    from nopelens.cli.common import model_from_args, tokens_from_args

    args = parse("--text", "stdlib", "--n-layers", "1", "--seq-len", "8")
    model = model_from_args(args)
    with pytest.raises(ValueError, match="--text needs a model with a tokenizer"):
        tokens_from_args(args, model)
    with pytest.raises(ValueError, match="exclude each other"):
        tokens_from_args(parse("--text", "stdlib", "--random-tokens"), model)
    with pytest.raises(ValueError, match="must be a text file, a folder or 'stdlib'"):
        tokens_from_args(parse("--text", "/no/such/file"), model)


def test_a_stdlib_chars_model_reads_text_with_its_character_encoding():
    from nopelens.cli.common import Inputs, _tokenizer_for
    from nopelens.training import BOS, encode_chars, get_task

    tokenizer, bos = _tokenizer_for(object(), get_task("stdlib_chars", length=8))
    assert tokenizer is encode_chars and bos == BOS
    assert Inputs.__doc__
