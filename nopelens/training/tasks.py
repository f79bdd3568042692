"""Tasks that need token positions, as seeded generators of tokenizer-free integer sequences.

Every task is a frozen, keyword-only dataclass whose fields are its parameters. It knows its
vocabulary size (:attr:`Task.d_vocab`), the context length a model needs (:attr:`Task.seq_len`,
the ``n_ctx``), and draws batches with :meth:`Task.sample`::

    batch = task.sample(64, split="train", generator=seed_or_torch_generator)
    logits = model(batch.tokens)                      # [batch pos d_vocab]
    task.accuracy(logits, batch)                      # on the answer positions only

A :class:`Batch` holds ``tokens`` (the model input), ``targets`` and ``answer_mask``: the
prediction the model makes at position ``p`` (``logits[:, p]``) is scored against
``targets[:, p]`` where ``answer_mask[:, p]`` is True. For sequence-to-sequence tasks the targets
are the next tokens (``targets[:, p] == tokens[:, p + 1]``); for labelling tasks (previous token,
index counting) they are a per-position label that is not part of the input.

Conventions shared by every task, chosen so that a causal model with no positional encoding can
solve them:

* token ``0`` is BOS and always sits at position 0 (the TransformerLens NoPE demo's convention:
  attention to BOS is the model's way to learn how far it is from the start);
* every example of a task has the same length, so "position" is well defined.

**Train/test split.** The split is a fixed function of the example, never of the seed: each
example's *key* (the operands, the input sequence) is hashed, and a key belongs to the test split
if its hash falls in the first ``test_fraction`` of the hash range. Examples are drawn by
rejection, so a test example can never appear in training, whatever the generators. The character
language model splits by file instead (held-out files).

Tasks: ``previous_token``, ``reverse``, ``addition``, ``modular``, ``parity``,
``index_counting`` and ``stdlib_chars`` (see :data:`TASKS`).

Examples:
    >>> task = get_task("addition")
    >>> batch = task.sample(2, split="test", generator=0)
    >>> batch.tokens.shape == (2, task.seq_len)
    True
    >>> task.render(batch.tokens[0])  # 933 + 760 = 1693, answer reversed
    '<bos> 9 3 3 + 7 6 0 = 3 9 6 1'
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sysconfig
import zlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int, UInt8

from nopelens.validation import InvalidParameterError, check_choice, check_int

SPLITS: tuple[str, ...] = ("train", "test")
#: Token id of the beginning-of-sequence token, at position 0 of every example.
BOS = 0

_MASK31 = (1 << 31) - 1
_HASH_RANGE = 1 << 20
_MAX_DRAW = 1 << 16


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of task examples.

    Attributes:
        tokens: Model input ``[batch pos]`` (int64), BOS at position 0.
        targets: ``[batch pos]`` (int64): the token that the prediction at each position is scored
            against; 0 where ``answer_mask`` is False.
        answer_mask: ``[batch pos]`` (bool): True where the prediction is scored.
    """

    tokens: Int[torch.Tensor, "batch pos"]
    targets: Int[torch.Tensor, "batch pos"]
    answer_mask: Bool[torch.Tensor, "batch pos"]

    def to(self, device: str | torch.device) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.tokens.to(device), self.targets.to(device), self.answer_mask.to(device))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 31-bit integer hash (the "lowbias" finaliser), exact in int64 arithmetic."""
    x = x & _MASK31
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK31
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _MASK31
    return x ^ (x >> 16)


def example_hash(
    keys: Int[torch.Tensor, "batch key"], salt: int = 0
) -> Int[torch.Tensor, " batch"]:
    """Hash each row of non-negative integer ``keys`` to ``[0, 2**20)``, deterministically.

    This is what decides the train/test split: a fixed function of the example.

    Examples:
        >>> keys = torch.tensor([[1, 2, 3], [1, 2, 3], [3, 2, 1]])
        >>> h = example_hash(keys)
        >>> bool(h[0] == h[1]), bool(h[0] == h[2])
        (True, False)
    """
    h = torch.full(keys.shape[:1], salt & _MASK31, dtype=torch.int64)
    h = _mix(h)
    for column in keys.to(torch.int64).unbind(-1):
        h = _mix(h * 1_000_003 + column + 1)
    return h % _HASH_RANGE


def _as_generator(generator: Any, func: str) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    check_int(generator, "generator", func, min=0)
    return torch.Generator().manual_seed(generator)


def _masked(
    logits: Float[torch.Tensor, "batch pos d_vocab_out"], batch: Batch, func: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if logits.shape[:2] != batch.tokens.shape:
        raise InvalidParameterError(
            f"logits has shape {tuple(logits.shape)} [batch pos d_vocab_out] but the batch tokens "
            f"have shape {tuple(batch.tokens.shape)} [batch pos] (in {func})."
        )
    mask = batch.answer_mask.to(logits.device)
    return logits, batch.targets.to(logits.device), mask


def answer_loss(
    logits: Float[torch.Tensor, "batch pos d_vocab_out"], batch: Batch
) -> Float[torch.Tensor, ""]:
    """Mean cross-entropy of the predictions at the answer positions (the training loss).

    Examples:
        >>> task = get_task("parity", length=4)
        >>> batch = task.sample(3, generator=0)
        >>> logits = torch.zeros(3, task.seq_len, task.d_vocab)
        >>> round(float(answer_loss(logits, batch)), 4) == round(math.log(task.d_vocab), 4)
        True
    """
    logits, targets, mask = _masked(logits, batch, "answer_loss")
    return torch.nn.functional.cross_entropy(logits[mask].float(), targets[mask])


def answer_accuracy(
    logits: Float[torch.Tensor, "batch pos d_vocab_out"],
    batch: Batch,
    *,
    per: str = "token",
) -> float:
    """Accuracy of the argmax predictions at the answer positions.

    Args:
        logits: Model output ``[batch pos d_vocab_out]``.
        batch: The batch the logits were computed on.
        per: ``"token"``: the fraction of answer tokens predicted correctly; ``"example"``: the
            fraction of examples whose whole answer is correct (exact match).

    Returns:
        A float in [0, 1].

    Examples:
        >>> task = get_task("previous_token", length=4)
        >>> batch = task.sample(2, generator=0)
        >>> perfect = torch.nn.functional.one_hot(batch.targets, task.d_vocab).float()
        >>> answer_accuracy(perfect, batch), answer_accuracy(perfect, batch, per="example")
        (1.0, 1.0)
    """
    check_choice(per, "per", ("token", "example"), "answer_accuracy")
    logits, targets, mask = _masked(logits, batch, "answer_accuracy")
    correct = logits.argmax(-1) == targets
    if per == "token":
        return float(correct[mask].float().mean())
    scored = mask.any(-1)
    return float((correct | ~mask).all(-1)[scored].float().mean())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """Base class of the tasks; subclasses define the keys, the examples and the vocabulary.

    Attributes:
        test_fraction: Share of the example space held out for testing (by hash of the example).
    """

    name: ClassVar[str] = "task"

    test_fraction: float = 0.2
    """Share of the example space held out for testing (by hash of the example)."""

    def __post_init__(self) -> None:
        value = self.test_fraction
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 < value < 1
        ):
            raise InvalidParameterError(
                f"The 'test_fraction' parameter of {type(self).__name__} must be a finite float "
                f"> 0.0 and < 1.0. Got {value!r} instead."
            )

    # -- what subclasses provide -------------------------------------------------------------
    @property
    def d_vocab(self) -> int:
        """Vocabulary size (token ids are ``0 .. d_vocab - 1``; 0 is BOS)."""
        return len(self.token_names)

    @property
    def seq_len(self) -> int:
        """Length of every example: the ``n_ctx`` a model needs."""
        raise NotImplementedError

    @property
    def token_names(self) -> tuple[str, ...]:
        """A printable name for every token id."""
        raise NotImplementedError

    @property
    def chance(self) -> float:
        """Per-token accuracy of guessing uniformly among the possible answers."""
        raise NotImplementedError

    def _draw_keys(self, n: int, generator: torch.Generator) -> Int[torch.Tensor, "batch key"]:
        raise NotImplementedError

    def _build(self, keys: Int[torch.Tensor, "batch key"]) -> Batch:
        raise NotImplementedError

    # -- shared behaviour --------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """A JSON-able description; ``get_task(**task.spec())`` rebuilds the task.

        Examples:
            >>> get_task("parity", length=6).spec()
            {'name': 'parity', 'test_fraction': 0.2, 'length': 6, 'running': False}
        """
        return {"name": self.name, **dataclasses.asdict(self)}

    def is_test(self, keys: Int[torch.Tensor, "batch key"]) -> Bool[torch.Tensor, " batch"]:
        """Whether each example key belongs to the test split (a fixed function of the key)."""
        threshold = round(self.test_fraction * _HASH_RANGE)
        return example_hash(keys, salt=zlib.crc32(self.name.encode())) < threshold

    def sample(
        self, n: int, *, split: str = "train", generator: torch.Generator | int = 0
    ) -> Batch:
        """Draw ``n`` examples of one split.

        Args:
            n: Number of examples.
            split: ``"train"`` or ``"test"``; the two never share an example.
            generator: A ``torch.Generator`` (advanced in place) or an int seed of a fresh one.
                The global RNG is never used.

        Returns:
            A :class:`Batch` of ``n`` examples of length :attr:`seq_len`, on the CPU.

        Raises:
            ValueError: For a bad ``n``, ``split`` or ``generator``, or if the split has no
                examples at all (``test_fraction`` too small for a tiny example space).
        """
        func = f"{type(self).__name__}.sample"
        check_int(n, "n", func, min=1)
        check_choice(split, "split", SPLITS, func)
        gen = _as_generator(generator, func)
        share = self.test_fraction if split == "test" else 1.0 - self.test_fraction
        parts: list[torch.Tensor] = []
        got = drawn = 0
        while got < n:
            m = min(math.ceil((n - got) / share * 1.25) + 16, _MAX_DRAW)
            keys = self._draw_keys(m, gen)
            keep = self.is_test(keys) == (split == "test")
            parts.append(keys[keep])
            got += int(keep.sum())
            drawn += m
            if drawn >= _MAX_DRAW and got < drawn * share / 100:
                raise InvalidParameterError(
                    f"{type(self).__name__} found {got} {split!r} examples in {drawn} draws: the "
                    f"example space is too small for test_fraction={self.test_fraction}."
                )
        return self._build(torch.cat(parts)[:n])

    def accuracy(
        self,
        logits: Float[torch.Tensor, "batch pos d_vocab_out"],
        batch: Batch,
        *,
        per: str = "token",
    ) -> float:
        """Accuracy on the answer positions; see :func:`answer_accuracy`."""
        return answer_accuracy(logits, batch, per=per)

    def render(self, tokens: Int[torch.Tensor, " pos"]) -> str:
        """One example as text, token by token.

        Examples:
            >>> task = get_task("parity", length=4)
            >>> task.render(torch.tensor([0, 1, 2, 2, 1, 3, 1]))
            '<bos> 0 1 1 0 = 0'
        """
        names = self.token_names
        return " ".join(names[int(t)] for t in tokens)


def _check_ints(obj: Any, **bounds: tuple[int, int | None]) -> None:
    func = type(obj).__name__
    for field, (low, high) in bounds.items():
        check_int(getattr(obj, field), field, func, min=low, max=high)


def _next_token_batch(tokens: torch.Tensor, first: int, last: int) -> Batch:
    """Score the next-token predictions made at positions ``first..last`` (inclusive)."""
    targets = torch.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, first : last + 1] = True
    return Batch(tokens, targets * mask, mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreviousToken(Task):
    """Output the token one position back (the TransformerLens NoPE demo's task).

    Format (``length`` = L)::

        tokens   <bos> x1 x2 x3 ... xL          x_i uniform in 1..n_symbols
        targets    .    .  x1 x2 ... x(L-1)     scored at positions 2..L

    The prediction at position p must name the input token at p - 1, which a NoPE model can only
    find through what the causal mask tells it about position. Ids: 0 BOS, 1..n_symbols symbols.
    Chance: 1 / n_symbols.

    Examples:
        >>> task = PreviousToken(n_symbols=5, length=4)
        >>> batch = task.sample(1, generator=0)
        >>> bool((batch.targets[0, 2:] == batch.tokens[0, 1:-1]).all())
        True
        >>> batch.answer_mask[0].tolist()
        [False, False, True, True, True]
    """

    name: ClassVar[str] = "previous_token"

    n_symbols: int = 16
    """Number of distinct symbols."""
    length: int = 16
    """Number of symbols after BOS."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, n_symbols=(2, None), length=(2, None))

    @property
    def seq_len(self) -> int:
        """``length + 1``."""
        return self.length + 1

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos>`` then ``s1 .. s{n_symbols}``."""
        return ("<bos>", *(f"s{i}" for i in range(1, self.n_symbols + 1)))

    @property
    def chance(self) -> float:
        """``1 / n_symbols``."""
        return 1.0 / self.n_symbols

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(1, self.n_symbols + 1, (n, self.length), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        tokens = torch.cat([torch.zeros(len(keys), 1, dtype=torch.int64), keys], dim=1)
        targets = torch.zeros_like(tokens)
        targets[:, 2:] = tokens[:, 1:-1]
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, 2:] = True
        return Batch(tokens, targets, mask)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reverse(Task):
    """Repeat a sequence backwards after a separator.

    Format (``length`` = L)::

        tokens   <bos> x1 x2 ... xL <sep> xL x(L-1) ... x1
        scored                      ^^^^^ ^^ ...    ^^        next-token predictions at the
                                                              separator and the first L-1 outputs

    Ids: 0 BOS, 1 separator, ``2..n_symbols+1`` symbols. The k-th output must copy input
    position L + 1 - k: the model has to locate positions by distance from the separator.
    Chance: 1 / n_symbols per token.

    Examples:
        >>> task = Reverse(n_symbols=4, length=3)
        >>> task.render(task.sample(1, generator=0).tokens[0])
        '<bos> a d d <sep> d d a'
        >>> batch = task.sample(1, generator=0)
        >>> bool((batch.tokens[0, 5:] == batch.tokens[0, 1:4].flip(0)).all())
        True
    """

    name: ClassVar[str] = "reverse"

    n_symbols: int = 8
    """Number of distinct symbols."""
    length: int = 6
    """Length of the sequence to reverse."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, n_symbols=(2, None), length=(2, None))

    @property
    def seq_len(self) -> int:
        """``2 * length + 2``."""
        return 2 * self.length + 2

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos> <sep>`` then letters (or ``s{i}`` beyond 26 symbols)."""
        if self.n_symbols <= 26:
            symbols = tuple(chr(ord("a") + i) for i in range(self.n_symbols))
        else:
            symbols = tuple(f"s{i}" for i in range(self.n_symbols))
        return ("<bos>", "<sep>", *symbols)

    @property
    def chance(self) -> float:
        """``1 / n_symbols``."""
        return 1.0 / self.n_symbols

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(2, self.n_symbols + 2, (n, self.length), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        n, length = keys.shape
        tokens = torch.cat(
            [
                torch.zeros(n, 1, dtype=torch.int64),
                keys,
                torch.ones(n, 1, dtype=torch.int64),
                keys.flip(1),
            ],
            dim=1,
        )
        return _next_token_batch(tokens, length + 1, 2 * length)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Addition(Task):
    """Add two ``n_digits``-digit numbers (3 by default), answer written least significant first.

    Format (``n_digits`` = 3)::

        tokens   <bos> a2 a1 a0 + b2 b1 b0 = c0 c1 c2 c3
        scored                            ^  ^  ^  ^        the 4 answer digits, next-token

    Operands are zero-padded; the sum ``c = a + b`` has ``n_digits + 1`` digits, written
    **reversed** by default (as in minGPT's adder) so that each digit depends only on digits and a
    carry already seen; ``reverse_answer=False`` writes it most significant first. Ids: 0 BOS,
    ``1..10`` digits 0-9, 11 ``+``, 12 ``=``. The split holds out operand pairs (a, b). Chance:
    0.1 per digit, ``10 ** -(n_digits + 1)`` per example.

    Examples:
        >>> task = Addition()
        >>> batch = task._build(torch.tensor([[417, 98]]))
        >>> task.render(batch.tokens[0])
        '<bos> 4 1 7 + 0 9 8 = 5 1 5 0'
        >>> task.d_vocab, task.seq_len
        (13, 13)
    """

    name: ClassVar[str] = "addition"

    n_digits: int = 3
    """Digits per operand."""
    reverse_answer: bool = True
    """Write the sum least significant digit first."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, n_digits=(1, 9))
        if not isinstance(self.reverse_answer, bool):
            raise InvalidParameterError(
                "The 'reverse_answer' parameter of Addition must be a bool. "
                f"Got {self.reverse_answer!r} instead."
            )

    @property
    def seq_len(self) -> int:
        """``3 * n_digits + 4``."""
        return 3 * self.n_digits + 4

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos>``, the digits, ``+`` and ``=``."""
        return ("<bos>", *(str(d) for d in range(10)), "+", "=")

    @property
    def chance(self) -> float:
        """0.1 per digit."""
        return 0.1

    def _digits(self, x: torch.Tensor, n: int) -> torch.Tensor:
        powers = 10 ** torch.arange(n - 1, -1, -1, dtype=torch.int64)
        return (x[:, None] // powers) % 10 + 1

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 10**self.n_digits, (n, 2), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        n, d = len(keys), self.n_digits
        a, b = keys[:, 0], keys[:, 1]
        answer = self._digits(a + b, d + 1)
        if self.reverse_answer:
            answer = answer.flip(1)
        column = torch.ones(n, 1, dtype=torch.int64)
        tokens = torch.cat(
            [
                0 * column,
                self._digits(a, d),
                11 * column,
                self._digits(b, d),
                12 * column,
                answer,
            ],
            dim=1,
        )
        return _next_token_batch(tokens, 2 * d + 2, 3 * d + 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Modular(Task):
    """Sum several terms modulo a prime (optionally with alternating signs).

    Format (``n_terms`` = 3)::

        tokens   <bos> x1 x2 x3 = y        y = (x1 + x2 + x3) mod p
        scored                  ^          one answer token, next-token

    With ``alternating=True`` the answer is ``x1 - x2 + x3 - ...`` mod p, which depends on each
    term's position. Ids: 0 BOS, ``1..p`` values 0..p-1, ``p + 1`` for ``=``. The split holds out
    term tuples. Chance: 1 / p.

    Examples:
        >>> task = Modular(p=7, n_terms=3)
        >>> task.render(task._build(torch.tensor([[5, 6, 4]])).tokens[0])
        '<bos> 5 6 4 = 1'
    """

    name: ClassVar[str] = "modular"

    p: int = 7
    """The prime modulus."""
    n_terms: int = 3
    """Number of terms."""
    alternating: bool = False
    """Alternate the signs (+, -, +, ...) so the answer depends on the term order."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, p=(2, None), n_terms=(2, None))
        if any(self.p % k == 0 for k in range(2, math.isqrt(self.p) + 1)):
            raise InvalidParameterError(
                f"The 'p' parameter of Modular must be a prime. Got {self.p} instead."
            )
        if not isinstance(self.alternating, bool):
            raise InvalidParameterError(
                f"The 'alternating' parameter of Modular must be a bool. "
                f"Got {self.alternating!r} instead."
            )

    @property
    def seq_len(self) -> int:
        """``n_terms + 3``."""
        return self.n_terms + 3

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos>``, the values ``0..p-1``, ``=``."""
        return ("<bos>", *(str(v) for v in range(self.p)), "=")

    @property
    def chance(self) -> float:
        """``1 / p``."""
        return 1.0 / self.p

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.p, (n, self.n_terms), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        n, k = keys.shape
        signs = torch.ones(k, dtype=torch.int64)
        if self.alternating:
            signs[1::2] = -1
        answer = (keys * signs).sum(-1) % self.p
        tokens = torch.cat(
            [
                torch.zeros(n, 1, dtype=torch.int64),
                keys + 1,
                torch.full((n, 1), self.p + 1, dtype=torch.int64),
                answer[:, None] + 1,
            ],
            dim=1,
        )
        return _next_token_batch(tokens, k + 1, k + 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parity(Task):
    """Output the parity of a bit string (or, with ``running=True``, of every prefix).

    Format (``length`` = L)::

        tokens   <bos> b1 b2 ... bL = y        y = (b1 + ... + bL) mod 2
        scored                      ^          one answer token, next-token

    With ``running=True`` there is no ``=``: the label at every bit position is the parity of the
    bits so far, which needs the prefix length (a position) as well as the count of ones::

        tokens   <bos> b1 b2       ...  bL
        targets    .   p1 p2       ...  pL     p_i = (b1 + ... + b_i) mod 2, scored at 1..L

    Ids: 0 BOS, 1 bit 0, 2 bit 1, 3 ``=``; answers use the bit ids. Every string has the same
    length, so the final parity only depends on the mean bit (what uniform attention computes).
    Parity is notoriously hard for gradient descent on transformers: the default length (8) is
    what trains reliably in minutes (length 12 stayed at chance in our runs; the running variant
    learns length 12). The split holds out bit strings. Chance: 0.5.

    Examples:
        >>> task = Parity(length=4)
        >>> task.render(task._build(torch.tensor([[1, 0, 1, 1]])).tokens[0])
        '<bos> 1 0 1 1 = 1'
        >>> running = Parity(length=4, running=True)
        >>> batch = running._build(torch.tensor([[1, 0, 1, 1]]))
        >>> running.render(batch.tokens[0]), running.render(batch.targets[0, 1:])
        ('<bos> 1 0 1 1', '1 1 0 1')
    """

    name: ClassVar[str] = "parity"

    length: int = 8
    """Number of bits."""
    running: bool = False
    """Score the parity of every prefix instead of the whole string only."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, length=(2, None))
        if not isinstance(self.running, bool):
            raise InvalidParameterError(
                f"The 'running' parameter of Parity must be a bool. Got {self.running!r} instead."
            )

    @property
    def seq_len(self) -> int:
        """``length + 3`` (``length + 1`` when running)."""
        return self.length + (1 if self.running else 3)

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos> 0 1 =``."""
        return ("<bos>", "0", "1", "=")

    @property
    def chance(self) -> float:
        """0.5."""
        return 0.5

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2, (n, self.length), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        n, length = keys.shape
        bos = torch.zeros(n, 1, dtype=torch.int64)
        if self.running:
            tokens = torch.cat([bos, keys + 1], dim=1)
            targets = torch.zeros_like(tokens)
            targets[:, 1:] = keys.cumsum(-1) % 2 + 1
            mask = torch.zeros(tokens.shape, dtype=torch.bool)
            mask[:, 1:] = True
            return Batch(tokens, targets, mask)
        answer = keys.sum(-1) % 2
        tokens = torch.cat(
            [
                bos,
                keys + 1,
                torch.full((n, 1), 3, dtype=torch.int64),
                answer[:, None] + 1,
            ],
            dim=1,
        )
        return _next_token_batch(tokens, length + 1, length + 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexCounting(Task):
    """At every position, output the position's index (counting from 1 after BOS).

    Format (``length`` = L)::

        tokens   <bos> x1 x2 ... xL          x_i uniform in the symbols
        targets    .   #1 #2 ... #L          scored at positions 1..L

    This is the most direct test of whether a model knows where it is: a learned positional
    embedding makes it trivial, a NoPE model must derive it from the causal mask. Ids: 0 BOS,
    ``1..n_symbols`` symbols, ``n_symbols + k`` the number ``#k``. Chance: 1 / L.

    Examples:
        >>> task = IndexCounting(n_symbols=3, length=4)
        >>> batch = task.sample(1, generator=0)
        >>> [task.token_names[t] for t in batch.targets[0, 1:]]
        ['#1', '#2', '#3', '#4']
    """

    name: ClassVar[str] = "index_counting"

    n_symbols: int = 8
    """Number of distinct input symbols."""
    length: int = 16
    """Number of positions after BOS."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_ints(self, n_symbols=(1, None), length=(2, None))

    @property
    def seq_len(self) -> int:
        """``length + 1``."""
        return self.length + 1

    @property
    def token_names(self) -> tuple[str, ...]:
        """``<bos>``, ``s1..s{n_symbols}``, ``#1..#{length}``."""
        return (
            "<bos>",
            *(f"s{i}" for i in range(1, self.n_symbols + 1)),
            *(f"#{k}" for k in range(1, self.length + 1)),
        )

    @property
    def chance(self) -> float:
        """``1 / length``."""
        return 1.0 / self.length

    def _draw_keys(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(1, self.n_symbols + 1, (n, self.length), generator=generator)

    def _build(self, keys: torch.Tensor) -> Batch:
        n = len(keys)
        tokens = torch.cat([torch.zeros(n, 1, dtype=torch.int64), keys], dim=1)
        targets = torch.zeros_like(tokens)
        targets[:, 1:] = self.n_symbols + torch.arange(1, self.length + 1)
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, 1:] = True
        return Batch(tokens, targets, mask)


# -- character-level language model on the Python standard library ---------------------------

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


#: Task name -> task class.
TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (PreviousToken, Reverse, Addition, Modular, Parity, IndexCounting, StdlibChars)
}
#: The synthetic tasks (every task but the character language model).
SYNTHETIC_TASKS: tuple[str, ...] = tuple(name for name in TASKS if name != "stdlib_chars")


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name.

    Args:
        name: One of :data:`TASKS`: ``previous_token``, ``reverse``, ``addition``, ``modular``,
            ``parity``, ``index_counting``, ``stdlib_chars``.
        **kwargs: The task's parameters (its dataclass fields), validated.

    Returns:
        The task.

    Raises:
        ValueError: For an unknown task name or parameter, or an invalid value.

    Examples:
        >>> get_task("modular", p=11, n_terms=2)
        Modular(test_fraction=0.2, p=11, n_terms=2, alternating=False)
        >>> get_task("sum")
        Traceback (most recent call last):
        ...
        nopelens.validation.InvalidParameterError: The 'name' parameter of get_task must be ...
    """
    if not isinstance(name, str) or name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidParameterError(
            f"The 'name' parameter of get_task must be one of "
            f"{', '.join(repr(t) for t in TASKS)}. Got {name!r} instead.{hint}"
        )
    cls = TASKS[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in kwargs if k not in fields]
    if unknown:
        raise InvalidParameterError(
            f"get_task got unknown parameter(s) {', '.join(repr(k) for k in unknown)} for task "
            f"{name!r}; its parameters are {', '.join(repr(f) for f in fields)}."
        )
    return cls(**kwargs)


def task_from_spec(spec: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`Task.spec` (as stored in training checkpoints).

    Examples:
        >>> task = get_task("reverse", length=4)
        >>> task_from_spec(task.spec()) == task
        True
    """
    spec = dict(spec)
    return get_task(spec.pop("name", None), **spec)


__all__: list[str] = [
    "BOS",
    "Batch",
    "TASKS",
    "SYNTHETIC_TASKS",
    "Task",
    "PreviousToken",
    "Reverse",
    "Addition",
    "Modular",
    "Parity",
    "IndexCounting",
    "StdlibChars",
    "CHAR_VOCAB",
    "get_task",
    "task_from_spec",
    "answer_loss",
    "answer_accuracy",
    "encode_chars",
    "example_hash",
    "stdlib_dir",
]
