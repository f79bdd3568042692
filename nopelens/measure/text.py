"""Text input: real text cut into fixed-length token windows with a model's tokenizer.

Every analysis takes a ``[batch, pos]`` batch of token ids. :func:`text_windows` makes one from
text: a string, a list of strings, a text file (a :class:`pathlib.Path`) or a list of files,
such as the Python standard library's own source (:func:`stdlib_sources`, bundled with every
Python, so real text needs no download).

**Windows.** Each *document* (a string, or a file) is tokenised without special tokens and cut
into consecutive, non-overlapping windows; the tail of a document shorter than a window is
dropped, and no window spans two documents, so every window is one contiguous piece of real
text. Documents are read in order, at most ``max_per_document`` windows from each, until
``max_windows`` windows are collected (the rest of the text is not read).

**BOS.** With ``prepend_bos=True`` (the default, as in TransformerLens' ``to_tokens``) each
window is ``[BOS] + (seq_len - 1)`` text tokens; with ``False`` it is ``seq_len`` text tokens.
The choice changes the results, so it is explicit: with a BOS every window starts with the same
token, which most pretrained models use as an attention sink, so position 0 holds the same
hidden state in every window and takes attention from all later positions; without one, the
first text token plays that role. Pass ``exclude_first=True`` to the analyses to leave position 0
out of the scores either way.

**Memory model.** Text is read and tokenised in chunks that start at 4096 characters and double
up to ``chunk_chars`` (1 MiB by default), so :func:`iter_text_windows` holds at most about
``4 * chunk_chars`` characters of text (a single line longer than that is cut), the token ids of
one chunk, a window's worth of leftover tokens and the windows of one chunk (``seq_len * 8``
bytes each): memory does not grow with the size of the file (measured: the same 23 MiB peak for
4, 16 and 64 MB files). :func:`text_windows` also keeps every window it returns
(``max_windows * seq_len * 8`` bytes: 10,000 windows of 128 tokens is 10 MB). The analyses then
stream the windows through the model ``batch_size`` at a time.

Chunks are cut just before a line break that follows a non-blank character. Byte-level BPE
tokenizers (GPT-2, Llama 3, Qwen, ...) never merge across that point, so the tokens equal those
of the whole text tokenised at once; a SentencePiece tokenizer can differ by one token per cut.
"""

from __future__ import annotations

import os
import random
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int

from nopelens.validation import InvalidParameterError, check_int

#: The smallest chunk read at once (characters); chunks double up to ``chunk_chars``.
_FIRST_CHUNK = 4096
#: Characters read to decide whether a file is text.
_SNIFF = 8192

Document = str | os.PathLike[str]
TextInput = Document | Sequence[Document]


def stdlib_sources(*, seed: int = 0) -> list[Path]:
    """The ``*.py`` files of the running interpreter's standard library, in a seeded order.

    The folder is ``sysconfig.get_paths()["stdlib"]`` (top level only). The order is a shuffle
    by a private ``random.Random(seed)``, so the first windows of :func:`text_windows` come from
    different files for different seeds; the global random state is untouched.

    Examples:
        >>> files = stdlib_sources(seed=0)
        >>> len(files) > 50, all(f.suffix == ".py" for f in files)
        (True, True)
        >>> files == stdlib_sources(seed=0), files == stdlib_sources(seed=1)
        (True, False)
    """
    check_int(seed, "seed", "stdlib_sources", min=0)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    random.Random(seed).shuffle(files)
    return files


def _documents(text: Any, func: str) -> list[Document]:
    """``text`` as a list of documents (strings and paths), every file checked to be readable."""
    if isinstance(text, (str, os.PathLike)):
        docs = [text]
    elif isinstance(text, Sequence) and not isinstance(text, (bytes, bytearray)):
        docs = list(text)
    else:
        docs = [text]
    if not docs or not all(isinstance(d, (str, os.PathLike)) for d in docs):
        raise InvalidParameterError(
            f"The 'text' parameter of {func} must be a string, a pathlib.Path to a text file, or "
            f"a non-empty list of them. Got {type(text).__name__} instead."
        )
    for doc in docs:
        if isinstance(doc, os.PathLike):
            path = Path(doc)
            if not path.is_file():
                what = "a folder" if path.is_dir() else "no such file"
                raise InvalidParameterError(
                    f"The 'text' parameter of {func} names {str(path)!r}, which is {what}; it "
                    f"needs a text file (a plain str is read as the text itself)."
                )
            with open(path, encoding="utf-8", errors="replace") as handle:
                if "\x00" in handle.read(_SNIFF):
                    raise InvalidParameterError(
                        f"The 'text' parameter of {func} names {str(path)!r}, which is not a "
                        f"text file (it holds NUL bytes)."
                    )
    return docs


def _cut(buffer: str) -> int:
    """Where to end a chunk: just before the last line break that follows a non-blank char."""
    i = buffer.rfind("\n")
    while i > 0:
        if not buffer[i - 1].isspace():
            return i
        i = buffer.rfind("\n", 0, i)
    return -1


def _chunks(doc: Document, chunk_chars: int) -> Iterator[str]:
    """The text of ``doc`` in pieces of growing size, cut where tokenizers split anyway."""
    handle = open(doc, encoding="utf-8", errors="replace") if isinstance(doc, os.PathLike) else None
    try:
        position, size, carry = 0, min(_FIRST_CHUNK, chunk_chars), ""
        while True:
            if handle is not None:
                piece = handle.read(size)
            else:
                piece = str(doc)[position : position + size]
                position += len(piece)
            buffer = carry + piece
            if not piece:
                if buffer:
                    yield buffer
                return
            cut = _cut(buffer)
            if cut <= 0 and len(buffer) < 4 * chunk_chars:
                carry = buffer  # no safe cut yet: read on (a single very long line is cut anyway)
            else:
                cut = cut if cut > 0 else len(buffer)
                yield buffer[:cut]
                carry = buffer[cut:]
            size = min(2 * size, chunk_chars)
    finally:
        if handle is not None:
            handle.close()


def _encoder(
    model: Any, tokenizer: Any, bos_id: Any, prepend_bos: bool, func: str
) -> tuple[Callable[[str], Any], int | None]:
    """The text -> ids function and the BOS id (None without ``prepend_bos``)."""
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise InvalidParameterError(
            f"The model given to {func} has no tokenizer (models built by nopelens and folders "
            f"without tokenizer files have none), so it cannot read text. Pass tokenizer=... (a "
            f"Hugging Face tokenizer or a function str -> ids), or token ids instead of text."
        )
    if hasattr(tok, "bos_token_id") and callable(tok):

        def encode(text: str) -> Any:
            return tok(text, add_special_tokens=False, verbose=False)["input_ids"]

        default_bos = tok.bos_token_id
    elif callable(tok):
        encode, default_bos = tok, None
    else:
        raise InvalidParameterError(
            f"The 'tokenizer' parameter of {func} must be a Hugging Face tokenizer or a function "
            f"str -> token ids. Got {type(tok).__name__} instead."
        )
    bos = bos_id if bos_id is not None else default_bos
    if not prepend_bos:
        return encode, None
    if bos is None or isinstance(bos, bool) or not isinstance(bos, int) or bos < 0:
        raise InvalidParameterError(
            f"{func} was asked to prepend a BOS token (prepend_bos=True), but the tokenizer has "
            f"no BOS token. Pass bos_id=..., or prepend_bos=False. Got bos_id={bos!r}."
        )
    return encode, bos


def _check(model: Any, seq_len: Any, prepend_bos: Any, max_windows: Any, func: str) -> None:
    if not isinstance(prepend_bos, bool):
        raise InvalidParameterError(
            f"The 'prepend_bos' parameter of {func} must be a bool. Got {prepend_bos!r} instead."
        )
    check_int(seq_len, "seq_len", func, min=2 if prepend_bos else 1)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and seq_len > n_ctx:
        raise InvalidParameterError(
            f"The 'seq_len' parameter of {func} must be <= the model's n_ctx ({n_ctx}). Got "
            f"{seq_len} instead."
        )
    if max_windows is not None:
        check_int(max_windows, "max_windows", func, min=1)


def iter_text_windows(
    model: Any,
    text: TextInput,
    *,
    seq_len: int,
    prepend_bos: bool = True,
    tokenizer: Any = None,
    bos_id: int | None = None,
    max_windows: int | None = None,
    max_per_document: int | None = None,
    batch_size: int = 64,
    chunk_chars: int = 1 << 20,
) -> Iterator[Int[torch.Tensor, "batch pos"]]:
    """Yield batches of token windows cut from ``text``, with bounded memory (module docstring).

    Arguments are checked before anything is read; see :func:`text_windows` for their meaning.
    ``batch_size`` is the number of windows per yielded batch (the last may be smaller) and
    ``chunk_chars`` the largest piece of text tokenised at once.

    Raises:
        InvalidParameterError: For a bad argument (before reading), an id outside the model's
            vocabulary, or, after reading everything, text too short for a single window.
    """
    func = "iter_text_windows"
    _check(model, seq_len, prepend_bos, max_windows, func)
    if max_per_document is not None:
        check_int(max_per_document, "max_per_document", func, min=1)
    check_int(batch_size, "batch_size", func, min=1)
    check_int(chunk_chars, "chunk_chars", func, min=1)
    docs = _documents(text, func)
    encode, bos = _encoder(model, tokenizer, bos_id, prepend_bos, func)
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if bos is not None and d_vocab is not None and bos >= d_vocab:
        raise InvalidParameterError(
            f"The BOS id {bos} of {func} is outside the model's vocabulary (d_vocab={d_vocab})."
        )
    return _windows(docs, encode, bos, seq_len, d_vocab, max_windows, max_per_document,
                    batch_size, chunk_chars)  # fmt: skip


def _windows(
    docs: list[Document],
    encode: Callable[[str], Any],
    bos: int | None,
    seq_len: int,
    d_vocab: int | None,
    max_windows: int | None,
    max_per_document: int | None,
    batch_size: int,
    chunk_chars: int,
) -> Iterator[torch.Tensor]:
    body = seq_len - (bos is not None)
    limit = max_windows if max_windows is not None else float("inf")
    pending: list[torch.Tensor] = []
    n_pending = total = longest = 0
    for doc in docs:
        taken, n_tokens = 0, 0
        tail = torch.empty(0, dtype=torch.long)
        for chunk in _chunks(doc, chunk_chars):
            ids = torch.as_tensor(encode(chunk), dtype=torch.long).reshape(-1)
            _check_ids(ids, d_vocab, doc)
            n_tokens += len(ids)
            tail = torch.cat([tail, ids])
            n = len(tail) // body
            if max_per_document is not None:
                n = min(n, max_per_document - taken)
            n = int(min(n, limit - total - n_pending))
            if n:
                rows = tail[: n * body].reshape(n, body)
                if bos is not None:
                    rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
                pending.append(rows)
                n_pending += n
                taken += n
                tail = tail[n * body :]
            if n_pending >= batch_size:
                stacked, full = torch.cat(pending), n_pending - n_pending % batch_size
                for start in range(0, full, batch_size):
                    yield stacked[start : start + batch_size]
                pending, n_pending = [stacked[full:]], n_pending - full
                total += full
            if total + n_pending >= limit or (
                max_per_document is not None and taken >= max_per_document
            ):
                break
        longest = max(longest, n_tokens)
        if total + n_pending >= limit:
            break
    if n_pending:
        yield torch.cat(pending)
        total += n_pending
    if total == 0:
        raise InvalidParameterError(
            f"The text is shorter than one window: its longest document has {longest} tokens, "
            f"and a window of seq_len={seq_len} needs {body}"
            f"{' (plus BOS)' if bos is not None else ''}. Use seq_len <= "
            f"{longest + (bos is not None)} or more text."
        )


def _check_ids(ids: torch.Tensor, d_vocab: int | None, doc: Document) -> None:
    if d_vocab is not None and len(ids) and int(ids.max()) >= d_vocab:
        where = repr(str(doc)) if isinstance(doc, os.PathLike) else "the text"
        raise InvalidParameterError(
            f"The tokenizer gives id {int(ids.max())} on {where}, but the model's d_vocab is "
            f"{d_vocab}: is it the model's own tokenizer?"
        )


def text_windows(
    model: Any,
    text: TextInput,
    *,
    seq_len: int,
    prepend_bos: bool = True,
    tokenizer: Any = None,
    bos_id: int | None = None,
    max_windows: int | None = None,
    max_per_document: int | None = None,
) -> Int[torch.Tensor, "batch pos"]:
    """Cut ``text`` into ``[n_windows, seq_len]`` token windows with the model's tokenizer.

    Args:
        model: The model the windows are for: its ``tokenizer`` is used (unless ``tokenizer`` is
            given) and ids and ``seq_len`` are checked against its ``d_vocab`` and ``n_ctx``.
            May be None when ``tokenizer`` is given.
        text: A ``str`` (the text itself), a :class:`pathlib.Path` to a UTF-8 text file, or a
            list of them (each is a document; :func:`stdlib_sources` gives one).
        seq_len: Tokens per window, BOS included.
        prepend_bos: Start every window with the BOS token (module docstring: why it matters).
        tokenizer: A Hugging Face tokenizer, or any function ``str -> ids`` (then ``bos_id``
            gives the BOS id). Defaults to ``model.tokenizer``.
        bos_id: The BOS id; defaults to the tokenizer's ``bos_token_id``.
        max_windows: Stop after this many windows (``None``: all the text).
        max_per_document: At most this many windows from each document (``None``: no limit).

    Returns:
        Int64 tensor ``[n_windows, seq_len]`` on the CPU; ``n_windows <= max_windows``.

    Raises:
        InvalidParameterError: For a tokenizer-less model, a missing or binary file, a bad
            argument, ids outside the vocabulary, or text shorter than one window.

    Examples:
        >>> words = {w: i for i, w in enumerate("<bos> the cat sat on a mat".split())}
        >>> def encode(text):
        ...     return [words[w] for w in text.split()]
        >>> text_windows(None, "the cat sat on the mat", seq_len=3, tokenizer=encode, bos_id=0)
        tensor([[0, 1, 2],
                [0, 3, 4],
                [0, 1, 6]])
        >>> text_windows(None, "the cat sat on the mat", seq_len=3, tokenizer=encode,
        ...              prepend_bos=False)
        tensor([[1, 2, 3],
                [4, 1, 6]])
    """
    batches = list(
        iter_text_windows(
            model,
            text,
            seq_len=seq_len,
            prepend_bos=prepend_bos,
            tokenizer=tokenizer,
            bos_id=bos_id,
            max_windows=max_windows,
            max_per_document=max_per_document,
            batch_size=4096,
        )
    )
    return torch.cat(batches)
