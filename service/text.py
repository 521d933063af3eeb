"""The text front end behind the service: the user lexicon that reloads itself, and texts -> proto results.

The pronouncing itself is ``g2p.text.Phonemizer`` (one per loaded version, with that bundle's dictionary); this
module gives it the deployment's user lexicon, the request's overrides, and a model function that sends the
unknown words of a request through the engine (batched with every other request's words).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from g2p.decoding import DecodeOptions
from g2p.lexicon import Lexicon, LexiconError, read_user_lexicon
from g2p.text.phonemizer import Alphabet, TextPron, render, validate_overrides
from g2p.text.tokens import token_reason
from service.api.g2p.v1 import g2p_pb2 as pb
from service.validation import InvalidArgument

log = logging.getLogger("g2p.text")

ALPHABETS: dict[int, Alphabet] = {
    pb.ALPHABET_UNSPECIFIED: "arpabet",
    pb.ALPHABET_ARPABET: "arpabet",
    pb.ALPHABET_ARPABET_NO_STRESS: "arpabet-nostress",
    pb.ALPHABET_IPA: "ipa",
}
KINDS = {
    "word": pb.TOKEN_KIND_WORD, "number": pb.TOKEN_KIND_NUMBER, "abbreviation": pb.TOKEN_KIND_ABBREVIATION,
    "initialism": pb.TOKEN_KIND_INITIALISM, "punctuation": pb.TOKEN_KIND_PUNCTUATION, "symbol": pb.TOKEN_KIND_SYMBOL,
    "url": pb.TOKEN_KIND_URL, "email": pb.TOKEN_KIND_EMAIL, "skipped": pb.TOKEN_KIND_SKIPPED,
}  # fmt: skip
SOURCES = {"lexicon": pb.SOURCE_LEXICON, "user": pb.SOURCE_USER, "model": pb.SOURCE_MODEL}


class UserLexicon:
    """The deployment's user lexicon, re-read when its file changes (checked at most every ``check_s``).

    A file that fails validation is refused whole: the error (file, line, problem) is logged and kept in
    ``error``, and the previous lexicon keeps serving. At start-up there is no previous one: the error is raised.
    """

    def __init__(self, path: Path | None, inventory: Sequence[str], check_s: float = 1.0) -> None:
        self.path = path
        self.inventory = frozenset(inventory)
        self.check_s = check_s
        self.table: Lexicon = {}
        self.error = ""
        self.reloads = 0
        self.failures = 0
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if path is not None:
            self.table = read_user_lexicon(path, self.inventory)
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def current(self) -> Lexicon:
        """The lexicon to use now (after a reload when the file changed)."""
        if self.path is None:
            return self.table
        now = time.monotonic()
        if now - self._checked < self.check_s:
            return self.table
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp is None or stamp == self._stamp:
                return self.table
            self._stamp = stamp
            try:
                self.table = read_user_lexicon(self.path, self.inventory)
            except LexiconError as exc:
                self.failures += 1
                self.error = str(exc)
                log.error("user lexicon refused, the previous one keeps serving: %s", exc)
            else:
                self.reloads += 1
                self.error = ""
                log.info("user lexicon reloaded: %d words from %s", len(self.table), self.path)
            return self.table


def check_texts(texts: Sequence[str], max_texts: int, max_chars: int, field: str = "texts") -> list[str]:
    """INVALID_ARGUMENT naming the limit when a request holds too many texts or too long a text."""
    if not texts:
        raise InvalidArgument(f"{field}: at least one text is required")
    if len(texts) > max_texts:
        raise InvalidArgument(f"{field}: {len(texts)} texts, the limit is {max_texts} (max_texts_per_request)")
    for i, t in enumerate(texts):
        if len(t) > max_chars:
            raise InvalidArgument(f"{field}[{i}]: {len(t)} characters, the limit is {max_chars} (max_text_chars)")
    return list(texts)


def overrides_of(entries: dict[str, str], inventory: Sequence[str]) -> dict[str, tuple[tuple[str, ...], ...]]:
    try:
        return validate_overrides(entries, inventory)
    except LexiconError as exc:
        raise InvalidArgument(f"options.lexicon: {exc}") from None


def model_options(max_len: int) -> DecodeOptions:
    """How the front end asks the model: greedy, the bundle's output limit."""
    return DecodeOptions(beam_size=1, max_len=max_len)


def to_proto(result: TextPron, alphabet: Alphabet, out: pb.TextResult | None = None) -> pb.TextResult:
    """One text's result as its message (filled into ``out``, e.g. ``response.results.add()``: no copy): from the
    result's compact rows (no Token objects made); ARPAbet rendered in place, empty fields left unset."""
    out = pb.TextResult() if out is None else out
    out.phonemes = result.phonemes(alphabet)
    add_token = out.tokens.add
    show = " ".join if alphabet == "arpabet" else functools.partial(render, alphabet=alphabet)
    for text, start, end, kind, _, words in result.rows:
        if kind == "skipped":
            token = add_token(text=text, start=start, end=end, kind=KINDS[kind], skip_reason=token_reason(text, kind))
        else:
            token = add_token(text=text, start=start, end=end, kind=KINDS[kind])
        if not words:
            continue
        add_word = token.words.add
        for w in words:
            if w.alternatives:
                alternatives = [show(a) for a in w.alternatives]
                word = add_word(
                    word=w.word, phonemes=show(w.phonemes), source=SOURCES[w.source], alternatives=alternatives
                )
            else:
                word = add_word(word=w.word, phonemes=show(w.phonemes), source=SOURCES[w.source])
            if w.score is not None:
                word.score = w.score
    return out
