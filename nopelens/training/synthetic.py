"""The synthetic tasks: tokenizer-free integer sequences whose answers need token positions.

One frozen dataclass per task (``previous_token``, ``reverse``, ``addition``, ``modular``,
``parity``, ``index_counting``), each with its format drawn in its docstring. They share the
conventions of :mod:`nopelens.training.task` (BOS at position 0, a fixed length, a train/test split
by hash of the example).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from nopelens.training.task import Batch, Task, _check_ints, _next_token_batch
from nopelens.validation import InvalidParameterError


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
