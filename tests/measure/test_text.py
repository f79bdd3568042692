"""text_windows: text -> [n_windows, seq_len] token windows, BOS explicit, memory bounded."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

WORDS = "<bos> a b c d e f g h".split()
IDS = {w: i for i, w in enumerate(WORDS)}


def encode(text):
    return [IDS[w] for w in text.split()]


class Cfg:
    n_ctx, d_vocab = 16, len(WORDS)


class WordModel:
    """A stand-in model: text_windows reads only ``cfg`` and ``tokenizer``."""

    cfg = Cfg()
    tokenizer = None


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from nopelens.models import load_pretrained, write_tiny_hf_model

    folder = tmp_path_factory.mktemp("lm") / "tiny"
    return load_pretrained(write_tiny_hf_model(folder, architecture="gpt2", n_layers=1, n_ctx=64))


def test_windows_are_contiguous_pieces_of_one_document_each():
    from nopelens.measure import text_windows

    docs = ["a b c d e f g", "h h h h h"]
    tokens = text_windows(None, docs, seq_len=3, tokenizer=encode, bos_id=0)
    # doc 1: [a b] [c d] [e f] (g dropped); doc 2: [h h] [h h] (h dropped)
    assert tokens.tolist() == [[0, 1, 2], [0, 3, 4], [0, 5, 6], [0, 8, 8], [0, 8, 8]]
    tokens = text_windows(None, docs, seq_len=3, tokenizer=encode, prepend_bos=False)
    assert tokens.tolist() == [[1, 2, 3], [4, 5, 6], [8, 8, 8]]


def test_limits_per_document_and_in_total():
    from nopelens.measure import text_windows

    docs = ["a b c d e f g", "h h h h h"]
    kw = {"seq_len": 3, "tokenizer": encode, "bos_id": 0}
    assert text_windows(None, docs, max_per_document=1, **kw).tolist() == [[0, 1, 2], [0, 8, 8]]
    assert text_windows(None, docs, max_windows=2, **kw).tolist() == [[0, 1, 2], [0, 3, 4]]


def test_files_and_strings_give_the_same_windows(tmp_path):
    from nopelens.measure import text_windows

    text = " ".join("abcdefgh"[i % 8] for i in range(200))
    path = tmp_path / "t.txt"
    path.write_text(text)
    a = text_windows(WordModel(), text, seq_len=7, tokenizer=encode, bos_id=0)
    b = text_windows(WordModel(), path, seq_len=7, tokenizer=encode, bos_id=0)
    assert torch.equal(a, b) and a.shape == (200 // 6, 7)


def test_reading_stops_once_enough_windows_are_collected(tmp_path):
    """The tail of this file cannot be tokenised: if it were read, encode would raise."""
    from nopelens.measure import iter_text_windows

    path = tmp_path / "big.txt"
    path.write_text(("a b c d\n" * 50_000) + "UNKNOWN_WORD\n")
    batches = list(iter_text_windows(WordModel(), path, seq_len=5, tokenizer=encode, bos_id=0,
                                     max_windows=10, batch_size=4))  # fmt: skip
    assert [len(b) for b in batches] == [4, 4, 2]
    with pytest.raises(KeyError):  # the whole file does reach the tail
        list(iter_text_windows(WordModel(), path, seq_len=5, tokenizer=encode, bos_id=0))


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="ab \n\t", max_size=300),
    chunk=st.integers(min_value=1, max_value=40),
)
def test_chunks_cover_the_text_and_stay_bounded(text, chunk):
    from nopelens.measure.text import _chunks

    pieces = list(_chunks(text, chunk))
    assert "".join(pieces) == text
    assert all(len(p) <= 4 * chunk + 4096 for p in pieces)


def test_chunked_tokens_equal_whole_text_tokens_for_a_byte_level_bpe(tiny_lm):
    from nopelens.measure import iter_text_windows, stdlib_sources

    path = stdlib_sources(seed=0)[0]
    whole = tiny_lm.tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)
    windows = torch.cat(list(iter_text_windows(tiny_lm, path, seq_len=17, prepend_bos=False,
                                               chunk_chars=64)))  # fmt: skip
    n = windows.numel()
    assert n > 1000
    assert windows.reshape(-1).tolist() == whole["input_ids"][:n]


def test_a_model_tokenizer_and_its_bos_are_used_by_default(tiny_lm):
    from nopelens.measure import text_windows

    tokens = text_windows(tiny_lm, "def f(x):\n    return x\n" * 20, seq_len=12, max_windows=3)
    assert tokens.shape == (3, 12)
    assert (tokens[:, 0] == tiny_lm.tokenizer.bos_token_id).all()
    assert (tokens[:, 1:] != tiny_lm.tokenizer.bos_token_id).all()


def test_stdlib_sources_are_a_seeded_shuffle_of_the_standard_library():
    import random
    import sysconfig
    from pathlib import Path

    from nopelens.measure import stdlib_sources

    random.seed(1)
    files = stdlib_sources(seed=3)
    random.seed(2)
    assert stdlib_sources(seed=3) == files  # a private generator: the global one plays no part
    root = Path(sysconfig.get_paths()["stdlib"])
    assert sorted(files) == sorted(root.glob("*.py")) and files == stdlib_sources(seed=3)
    assert files != stdlib_sources(seed=4)


# --- bad input ------------------------------------------------------------------------------


def test_text_shorter_than_one_window_says_how_long_it_is():
    from nopelens.measure import text_windows

    with pytest.raises(ValueError, match=r"shorter than one window: its longest document has 3 "
                       r"tokens.*needs 4 \(plus BOS\). Use seq_len <= 4"):  # fmt: skip
        text_windows(None, ["a b c", "d"], seq_len=5, tokenizer=encode, bos_id=0)


def test_a_model_without_tokenizer_cannot_read_text():
    from nopelens import build_model
    from nopelens.measure import text_windows

    model = build_model(n_layers=1, d_model=8, n_heads=2, d_vocab=10, n_ctx=8)
    with pytest.raises(ValueError, match="has no tokenizer .* cannot read text"):
        text_windows(model, "a b c", seq_len=3)


@pytest.mark.parametrize(
    ("text", "kwargs", "match"),
    [
        ("a b", {"seq_len": 1}, r"'seq_len' parameter of iter_text_windows must be an int >= 2"),
        ("a b", {"seq_len": 17}, r"must be <= the model's n_ctx \(16\)"),
        ("a b", {"seq_len": 3, "max_windows": 0}, r"'max_windows' .* >= 1"),
        ([], {"seq_len": 3}, r"non-empty list"),
        ("a b", {"seq_len": 3, "bos_id": None}, r"no BOS token. Pass bos_id"),
    ],
)
def test_bad_arguments_are_refused_before_reading(text, kwargs, match):
    from nopelens.measure import text_windows

    kwargs = {"tokenizer": encode, "bos_id": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        text_windows(WordModel(), text, **kwargs)


def test_missing_binary_and_folder_paths_are_named(tmp_path):
    from nopelens.measure import text_windows

    (tmp_path / "bin.dat").write_bytes(b"a\x00b")
    for path, match in (
        (tmp_path / "nope.txt", "which is no such file"),
        (tmp_path, "which is a folder"),
        (tmp_path / "bin.dat", "not a text file"),
    ):
        with pytest.raises(ValueError, match=match):
            text_windows(WordModel(), path, seq_len=3, tokenizer=encode, bos_id=0)


def test_ids_outside_the_vocabulary_mean_the_wrong_tokenizer():
    from nopelens.measure import text_windows

    with pytest.raises(ValueError, match=r"gives id 99 .* d_vocab is 9: is it the model's own"):
        text_windows(WordModel(), "a b c", seq_len=2, tokenizer=lambda t: [99, 1, 2], bos_id=0)
