"""A character-level language model on the Python standard library's own source files.

:class:`StdlibChars` is the one task with natural text: its examples are windows of the running
interpreter's ``*.py`` files, encoded one id per character with :data:`CHAR_VOCAB`
(:func:`encode_chars`). The split holds out whole files (by a hash of the file name).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sysconfig
import zlib
from pathlib import Path
from typing import ClassVar

import torch
from jaxtyping import Int, UInt8

from nopelens.training.task import (
    _HASH_RANGE,
    SPLITS,
    Batch,
    Task,
    _as_generator,
    _check_ints,
    _next_token_batch,
)
from nopelens.validation import InvalidParameterError, check_choice, check_int

#: Character vocabulary of :class:`StdlibChars`: BOS, UNK, tab, newline, printable ASCII.
CHAR_VOCAB: tuple[str, ...] = ("<bos>", "<unk>", "\t", "\n", *(chr(c) for c in range(32, 127)))
UNK = 1
_NOT_IN_VOCAB = re.compile(r"[^\t\n\x20-\x7e]")


def _char_table() -> bytes:
    table = bytearray([UNK] * 256)
    for i, ch in enumerate(CHAR_VOCAB[2:], start=2):
        table[ord(ch)] = i
    table[0] = UNK  # characters outside the vocabulary are first replaced by NUL
    return bytes(table)


def encode_chars(text: str) -> Int[torch.Tensor, " pos"]:
    r"""Encode text with :data:`CHAR_VOCAB`: one id per character, UNK for anything else.

    Examples:
        >>> encode_chars("a\tβ").tolist()
        [69, 2, 1]
    """
    data = _NOT_IN_VOCAB.sub("\x00", text).encode("ascii").translate(_char_table())
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)


def stdlib_dir() -> Path:
    """The standard-library folder of the running interpreter (``sysconfig`` ``stdlib`` path)."""
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=4)
def _load_corpus(
    root: str, test_fraction: float
) -> tuple[dict[str, tuple[str, ...]], dict[str, torch.Tensor]]:
    files = sorted(p for p in Path(root).glob("*.py") if p.is_file())
    threshold = round(test_fraction * _HASH_RANGE)
    names: dict[str, list[str]] = {"train": [], "test": []}
    for path in files:
        h = zlib.crc32(path.name.encode()) % _HASH_RANGE
        names["test" if h < threshold else "train"].append(path.name)
    if not names["train"] or not names["test"]:
        raise ValueError(
            f"StdlibChars needs *.py files in both splits; {root!r} has {len(files)} "
            f"({len(names['train'])} train, {len(names['test'])} test)."
        )
    data: dict[str, torch.Tensor] = {}
    for split, split_names in names.items():
        text = "\n".join(
            (Path(root) / name).read_text(encoding="utf-8", errors="replace")
            for name in split_names
        )
        data[split] = encode_chars(text).to(torch.uint8)
    return {k: tuple(v) for k, v in names.items()}, data


@dataclasses.dataclass(frozen=True, kw_only=True)
class StdlibChars(Task):
    """Character-level language modelling on the Python standard library's own source files.

    The corpus is every ``*.py`` file directly in the running interpreter's standard-library
    folder (``sysconfig.get_paths()["stdlib"]``, or ``root``), in sorted order, read locally (no
    network). Whole files are held out for testing: a file is a test file when the CRC-32 of its
    name falls in the first ``test_fraction`` of the hash range. The files of each split are
    joined with newlines, and examples are random windows of ``length`` characters::

        tokens   <bos> c1 c2 ... cL
        targets   c1   c2 c3 ... .         every next character is scored (positions 0..L-1)

    Vocabulary (:data:`CHAR_VOCAB`, 99 ids): 0 BOS, 1 UNK (any character outside the others:
    non-ASCII, carriage return, form feed), tab, newline, and the 95 printable ASCII characters.
    Chance is the frequency of the most common character in the training files (the accuracy of
    always predicting it; usually the space).

    Examples:
        >>> task = StdlibChars(length=16)
        >>> batch = task.sample(2, split="test", generator=0)
        >>> batch.tokens.shape, task.d_vocab
        (torch.Size([2, 17]), 99)
        >>> set(task.files("train")) & set(task.files("test"))
        set()
    """

    name: ClassVar[str] = "stdlib_chars"

    test_fraction: float = 0.1
    """Share of files held out (by a hash of the file name)."""
    length: int = 64
    """Characters per example (after BOS)."""
    root: str | None = None
    """Folder of ``*.py`` files; None means the running interpreter's standard library."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, length=(2, None))
        if self.root is not None and not os.path.isdir(self.root):
            raise InvalidParameterError(
                f"The 'root' parameter of StdlibChars must be a folder of *.py files or None. "
                f"Got {self.root!r} instead."
            )

    @property
    def folder(self) -> Path:
        """The folder the corpus is read from."""
        return Path(self.root) if self.root is not None else stdlib_dir()

    def files(self, split: str) -> tuple[str, ...]:
        """Names of the files in ``split``, sorted."""
        check_choice(split, "split", SPLITS, "StdlibChars.files")
        return _load_corpus(str(self.folder), self.test_fraction)[0][split]

    def corpus(self, split: str) -> UInt8[torch.Tensor, " pos"]:
        """All the characters of ``split`` as ids (uint8)."""
        check_choice(split, "split", SPLITS, "StdlibChars.corpus")
        return _load_corpus(str(self.folder), self.test_fraction)[1][split]

    @property
    def seq_len(self) -> int:
        """``length + 1``."""
        return self.length + 1

    @property
    def token_names(self) -> tuple[str, ...]:
        r""":data:`CHAR_VOCAB`, with tab and newline spelled ``\\t`` and ``\\n``."""
        return tuple({"\t": "\\t", "\n": "\\n"}.get(c, c) for c in CHAR_VOCAB)

    @property
    def chance(self) -> float:
        """Frequency of the most common character in the training files."""
        counts = torch.bincount(self.corpus("train").to(torch.int64), minlength=self.d_vocab)
        return float(counts.max() / counts.sum())

    def render(self, tokens: Int[torch.Tensor, " pos"]) -> str:
        """The characters of one example (BOS and UNK shown as ``<bos>`` and ``<unk>``)."""
        return "".join(CHAR_VOCAB[int(t)] for t in tokens)

    def sample(
        self, n: int, *, split: str = "train", generator: torch.Generator | int = 0
    ) -> Batch:
        """Draw ``n`` random windows of ``length`` characters from the files of ``split``."""
        func = "StdlibChars.sample"
        check_int(n, "n", func, min=1)
        check_choice(split, "split", SPLITS, func)
        gen = _as_generator(generator, func)
        data = self.corpus(split)
        if len(data) <= self.length:
            raise ValueError(
                f"The {split!r} files of StdlibChars hold {len(data)} characters, fewer than "
                f"length={self.length}."
            )
        starts = torch.randint(0, len(data) - self.length + 1, (n,), generator=gen)
        window = data[starts[:, None] + torch.arange(self.length)].to(torch.int64)
        tokens = torch.cat([torch.zeros(n, 1, dtype=torch.int64), window], dim=1)
        return _next_token_batch(tokens, 0, self.length - 1)
