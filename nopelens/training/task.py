"""What every task shares: the :class:`Batch`, the :class:`Task` base class, the split and scoring.

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

The tasks themselves live in :mod:`nopelens.training.synthetic` (``previous_token``,
``reverse``, ``addition``, ``modular``, ``parity``, ``index_counting``) and
:mod:`nopelens.training.text` (``stdlib_chars``); :mod:`nopelens.training.registry` names them
(:data:`~nopelens.training.TASKS`, :func:`~nopelens.training.get_task`).

Examples:
    >>> from nopelens.training import get_task
    >>> task = get_task("addition")
    >>> batch = task.sample(2, split="test", generator=0)
    >>> batch.tokens.shape == (2, task.seq_len)
    True
    >>> task.render(batch.tokens[0])  # 933 + 760 = 1693, answer reversed
    '<bos> 9 3 3 + 7 6 0 = 3 9 6 1'
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int

from nopelens.validation import InvalidParameterError, check_choice, check_int

SPLITS: tuple[str, ...] = ("train", "test")
#: Token id of the beginning-of-sequence token, at position 0 of every example.
BOS = 0

_MASK31 = (1 << 31) - 1
_HASH_RANGE = 1 << 20
_MAX_DRAW = 1 << 16


@dataclasses.dataclass(frozen=True, repr=False)
class Batch:
    """A batch of task examples.

    Attributes:
        tokens: Model input ``[batch pos]`` (int64), BOS at position 0.
        targets: ``[batch pos]`` (int64): the token that the prediction at each position is scored
            against; 0 where ``answer_mask`` is False.
        answer_mask: ``[batch pos]`` (bool): True where the prediction is scored.

    Examples:
        >>> from nopelens.training import get_task
        >>> get_task("parity", length=4).sample(8, generator=0)
        Batch(batch=8, pos=7, answer_tokens=8, device='cpu')
    """

    tokens: Int[torch.Tensor, "batch pos"]
    targets: Int[torch.Tensor, "batch pos"]
    answer_mask: Bool[torch.Tensor, "batch pos"]

    def to(self, device: str | torch.device) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.tokens.to(device), self.targets.to(device), self.answer_mask.to(device))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        n, pos = self.tokens.shape
        answers = int(self.answer_mask.sum())
        return (
            f"Batch(batch={n}, pos={pos}, answer_tokens={answers}, "
            f"device={self.tokens.device.type!r})"
        )


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
        >>> from nopelens.training import get_task
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
        >>> from nopelens.training import get_task
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
            >>> from nopelens.training import get_task
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
            >>> from nopelens.training import get_task
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
