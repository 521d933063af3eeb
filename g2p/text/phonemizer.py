"""Text in, pronunciations out: tokens with spans -> spoken words -> user lexicon, CMU lexicon, then the model.

    from g2p.text import Phonemizer
    g2p = Phonemizer.from_bundle("models/g2p/1")
    result = g2p("Dr. Smith paid $5.20.")
    result.phonemes()            # 'D AA1 K T ER0 | S M IH1 TH | P EY1 D | F AY1 V | ... .'
    result.phonemes("ipa")       # 'ˈdɑktɚ ˈsmɪθ ˈpeɪd ...'

Precedence for each spoken word: the request's overrides, then the deployment's user lexicon (both reported as
source ``user``), then the bundle's dictionary (``lexicon``; its other pronunciations are the alternatives), then
the model (``model``, with its score). The model sees each distinct unknown word once per call, in one batch;
its answers are kept in a bounded LRU cache. A word longer than the model reads is cut into pieces it can read.
"""  # noqa: RUF002 (IPA)

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Literal

from g2p.lexicon import Lexicon, read_lexicon_file
from g2p.text.alphabets import strip_stress, to_ipa
from g2p.text.tokens import Token, scan, token_reason

Alphabet = Literal["arpabet", "arpabet-nostress", "ipa"]
ALPHABETS: tuple[Alphabet, ...] = ("arpabet", "arpabet-nostress", "ipa")
WORD_SEPARATOR = " | "
"""Between two words of a flat ARPAbet string (phonemes themselves are separated by single spaces)."""

LETTER_NAMES: dict[str, tuple[str, ...]] = {
    k: tuple(v.split())
    for k, v in {
        "a": "EY1", "b": "B IY1", "c": "S IY1", "d": "D IY1", "e": "IY1", "f": "EH1 F", "g": "JH IY1",
        "h": "EY1 CH", "i": "AY1", "j": "JH EY1", "k": "K EY1", "l": "EH1 L", "m": "EH1 M", "n": "EH1 N",
        "o": "OW1", "p": "P IY1", "q": "K Y UW1", "r": "AA1 R", "s": "EH1 S", "t": "T IY1", "u": "Y UW1",
        "v": "V IY1", "w": "D AH1 B AH0 L Y UW0", "x": "EH1 K S", "y": "W AY1", "z": "Z IY1",
    }.items()
}  # fmt: skip
"""A single letter spelled out (in an initialism, a URL, "3 p.m.") is its name, not the word ("a" -> EY1, not AH0)."""

KEPT_PRONS = 50_000
"""At most this many lexicon words' pronunciations are kept across calls (about 10 MB; then they are made anew)."""

MANY_WORDS = 16
"""A model call of this many words or more (a batch of texts) is split among :meth:`Phonemizer.from_bundle`'s
sessions, decoding at once; fewer (one text's unknown words: 1.7 on average on the fortunes) go to one session."""

ModelAnswer = tuple[tuple[str, ...], float]
ModelFn = Callable[[Sequence[str]], Sequence[ModelAnswer]]
"""Distinct words -> (phonemes, score) of each, in order: the model's best hypothesis."""


@dataclass(frozen=True)
class WordPron:
    """One spoken word and how it is pronounced."""

    word: str
    phonemes: tuple[str, ...]
    source: str  # "user", "lexicon" or "model"
    alternatives: tuple[tuple[str, ...], ...] = ()
    score: float | None = None  # the model's (length-normalised log-probability); None for lexicon words
    cached: bool = False  # a model answer taken from the cache

    def render(self, alphabet: Alphabet = "arpabet") -> str:
        return render(self.phonemes, alphabet)


@dataclass(frozen=True)
class TokenPron:
    token: Token
    words: tuple[WordPron, ...]


Row = tuple[str, int, int, str, tuple[str, ...], tuple[WordPron, ...]]
"""A token as the phonemizer keeps it: (text, start, end, kind, spoken words, their pronunciations)."""


class TextPron:
    """A text's tokens (with spans into ``text``), each with its spoken words' pronunciations. Immutable.

    The phonemizer builds it from compact rows: the :class:`TokenPron` and :class:`Token` objects of ``tokens`` are
    made on first access (a caller that wants only :meth:`phonemes` never pays for them)."""

    __slots__ = ("_rows", "_tokens", "text")
    text: str
    _rows: list[Row]
    _tokens: tuple[TokenPron, ...] | None

    def __init__(self, text: str, tokens: Iterable[TokenPron]) -> None:
        tokens = tuple(tokens)
        rows = [(t.token.text, t.token.start, t.token.end, t.token.kind, t.token.spoken, t.words) for t in tokens]
        _init(self, text, rows, tokens)

    @classmethod
    def from_rows(cls, text: str, rows: list[Row]) -> TextPron:
        out = cls.__new__(cls)
        _init(out, text, rows, None)
        return out

    @property
    def tokens(self) -> tuple[TokenPron, ...]:
        tokens = self._tokens
        if tokens is None:
            tokens = tuple(
                TokenPron(Token(text, start, end, kind, spoken, token_reason(text, kind)), words)
                for text, start, end, kind, spoken, words in self._rows
            )
            object.__setattr__(self, "_tokens", tokens)
        return tokens

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, TextPron)
        return self.text == other.text and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash((self.text, self.tokens))

    def __repr__(self) -> str:
        return f"TextPron(text={self.text!r}, tokens={self.tokens!r})"

    def __reduce__(self) -> tuple[type[TextPron], tuple[str, tuple[TokenPron, ...]]]:
        return TextPron, (self.text, self.tokens)

    def phonemes(self, alphabet: Alphabet = "arpabet") -> str:
        """One flat string for a synthesiser: words and punctuation in order, skipped tokens left out.

        ARPAbet: a word's phonemes separated by spaces, words by `` | ``, punctuation after a space
        (``HH AH0 L OW1 , | W ER1 L D !``). IPA: words separated by spaces, punctuation attached
        (``həˈloʊ, ˈwɝld!``); :func:`join_flat` states the rule."""  # noqa: RUF002 (IPA)
        ipa = alphabet == "ipa"
        word_sep, punct_sep = (" ", "") if ipa else (WORD_SEPARATOR, " ")
        out: list[str] = []
        for text, _, _, kind, _, words in self._rows:
            if kind == "punctuation":
                mark = text.strip()
                if mark:
                    if out:
                        out.append(punct_sep)
                    out.append(mark)
            for w in words:
                shown = " ".join(w.phonemes) if alphabet == "arpabet" else render(w.phonemes, alphabet)
                if shown:
                    if out:
                        out.append(word_sep)
                    out.append(shown)
        return "".join(out)

    @property
    def rows(self) -> tuple[Row, ...]:
        """The tokens in their compact form, without making :class:`Token` objects: (text, start, end, kind, spoken
        words, their pronunciations) each; a token's ``reason`` is ``token_reason(text, kind)``."""
        return tuple(self._rows)

    def words(self) -> list[WordPron]:
        """Every spoken word's pronunciation, in order."""
        return [w for row in self._rows for w in row[5]]

    def sources(self) -> list[str]:
        return [w.source for row in self._rows for w in row[5]]


def _init(pron: TextPron, text: str, rows: list[Row], tokens: tuple[TokenPron, ...] | None) -> None:
    object.__setattr__(pron, "text", text)
    object.__setattr__(pron, "_rows", rows)
    object.__setattr__(pron, "_tokens", tokens)


def join_flat(parts: Sequence[tuple[bool, str]], ipa: bool) -> str:
    """Words and punctuation in order: a word follows anything with `` | `` (IPA: a space), punctuation follows
    with a space (IPA: attached)."""
    out = ""
    for is_word, text in parts:
        if not text:
            continue
        if not out:
            out = text
        elif is_word:
            out += (" " if ipa else WORD_SEPARATOR) + text
        else:
            out += ("" if ipa else " ") + text
    return out


def render(phonemes: Sequence[str], alphabet: Alphabet = "arpabet") -> str:
    if alphabet == "arpabet":
        return " ".join(phonemes)
    if alphabet == "arpabet-nostress":
        return " ".join(strip_stress(phonemes))
    if alphabet == "ipa":
        return to_ipa(phonemes)
    raise ValueError(f"alphabet must be one of {ALPHABETS}, got {alphabet!r}")


class ModelCache:
    """A bounded LRU cache of model answers, safe across threads."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        self._items: OrderedDict[str, ModelAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, word: str) -> ModelAnswer | None:
        with self._lock:
            found = self._items.get(word)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(word)
            self.hits += 1
            return found

    def put(self, word: str, answer: ModelAnswer) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[word] = answer
            self._items.move_to_end(word)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def pieces(word: str, max_chars: int) -> list[str]:
    """A word cut into pieces of at most ``max_chars`` (the model's source limit); apostrophes never lead a piece."""
    out: list[str] = []
    rest = word
    while len(rest) > max_chars:
        cut = max_chars
        while cut > 1 and rest[cut] == "'":
            cut -= 1
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        out.append(rest)
    return [p.strip("'") for p in out if p.strip("'")]


class Phonemizer:
    """Texts -> :class:`TextPron`. Thread-safe; the user lexicon may be swapped while it serves."""

    def __init__(
        self,
        lexicon: Lexicon | None,
        model: ModelFn | None,
        max_word_chars: int,
        user: Lexicon | None = None,
        cache_size: int = 100_000,
    ) -> None:
        self.lexicon: Lexicon = lexicon or {}
        self.user: Lexicon = user or {}
        self.model = model
        self.max_word_chars = max_word_chars
        self.cache = ModelCache(cache_size)
        self._kept: tuple[Lexicon, dict[str, WordPron], dict[str, WordPron]] | None = None

    @classmethod
    def from_bundle(cls, path: str | Path, variant: str = "auto", threads: int = 2) -> Phonemizer:
        """In process, on ONNX Runtime's CPU provider: the bundle's lexicon (if it has one) and model.

        A call's unknown words decode on a session of 1 intra-op thread (the server's per-worker sessions); a call
        of at least :data:`MANY_WORDS` words (a batch of texts) is split among ``threads`` such sessions decoding
        at once (made on the first such call; ``g2p.pipeline.ParallelTranscriber``). All give the same answers.
        Measured on 2 cores (A/B in one process, 992 test words in calls of 31, 4 rounds): 2 sessions of 1 thread
        1.16 s median against 1 session of 2 threads 1.40 s (1.20x); earlier, with a training run beside it:
        single-word calls, 1 thread 15.6 ms median vs 2 threads 17.8 (18.5 spinning), and one text per call
        (1,000 fortunes) 3.1-3.5 s with 1 thread vs 7.9-9.4 s with 2 spinning threads (their spinning took the CPU
        the text stages between calls need): hence one thread per session and no spinning."""
        import threading

        from g2p.bundle import verify_bundle
        from g2p.decoding import DecodeOptions
        from g2p.ort_backend import CPU, OrtBackend, SessionConfig
        from g2p.pipeline import ParallelTranscriber, transcribe
        from g2p.tokenization import G2PTokenizers

        d = Path(path)
        manifest = verify_bundle(d)
        name = variant if variant != "auto" else ("fused" if "fused" in manifest.variants else "fp32")
        config = SessionConfig(intra_op_threads=1, allow_spinning=False)

        def session() -> OrtBackend:
            return OrtBackend(d, name, [CPU], config=config, manifest=manifest)

        one = session()
        many: list[ParallelTranscriber] = []
        made = threading.Lock()
        tok = G2PTokenizers.load(d)
        options = DecodeOptions(beam_size=1, max_len=manifest.limits.max_target_len)

        def model(words: Sequence[str]) -> list[ModelAnswer]:
            if threads < 2 or len(words) < MANY_WORDS:
                results = transcribe(one, tok, words, options)
            else:
                with made:
                    if not many:
                        many.append(ParallelTranscriber([one, *(session() for _ in range(threads - 1))]))
                results = many[0].transcribe(tok, words, options, batch_size=-(-len(words) // threads))
            return [(r[0].phonemes, r[0].score) for r in results]

        lexicon = read_lexicon_file(d / manifest.lexicon_file) if manifest.lexicon_file else None
        return cls(lexicon, model, manifest.limits.max_word_chars)

    def __call__(
        self,
        texts: str | Sequence[str],
        overrides: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
        model: ModelFn | None = None,
    ) -> TextPron | list[TextPron]:
        """One text -> one result; a list of texts -> a list (all their unknown words in one model batch)."""
        single = isinstance(texts, str)
        out = self.phonemize([texts] if isinstance(texts, str) else list(texts), overrides, model)
        return out[0] if single else out

    def phonemize(
        self,
        texts: Sequence[str],
        overrides: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
        model: ModelFn | None = None,
        user: Lexicon | None = None,
    ) -> list[TextPron]:
        """``user`` replaces the phonemizer's own user lexicon for this call (a service's reloaded file)."""
        over = overrides or {}
        lexicon = self.lexicon
        user = self.user if user is None else user
        known: Callable[[str], bool] = lexicon.__contains__
        if over or user:

            def known(w: str) -> bool:
                return w in over or w in user or w in lexicon

        scanned = [scan(t, known) for t in texts]
        prons, letters = self._lexicon_prons()
        table: dict[str, WordPron] = {}  # every distinct spoken word of the call -> its pronunciation
        unknown: list[str] = []
        for w in {w for rows in scanned for row in rows for w in row[4]}:
            if w in over or w in user:
                table[w] = user_pron(w, over, user, lexicon)
                continue
            found = prons.get(w)
            if found is None:
                alts = lexicon.get(w)
                if alts is None:
                    unknown.append(w)
                    continue
                if len(prons) >= KEPT_PRONS:  # a bound on memory: start again
                    prons.clear()
                found = prons[w] = WordPron(w, alts[0], "lexicon", alts[1:])
            table[w] = found
        table.update(self._guess(sorted(unknown), model or self.model))
        out = []
        for text, rows in zip(texts, scanned, strict=True):
            done: list[Row] = []
            for token, start, end, kind, spoken in rows:
                if kind == "word":  # the common case: not spelled
                    words = (table[spoken[0]],) if len(spoken) == 1 else tuple([table[w] for w in spoken])
                else:  # a spelled letter is its name, unless the request or the user lexicon has it
                    words = tuple(
                        [letters[w] if w in letters and w not in over and w not in user else table[w] for w in spoken]
                    )
                done.append((token, start, end, kind, spoken, words))
            out.append(TextPron.from_rows(text, done))
        return out

    def _lexicon_prons(self) -> tuple[dict[str, WordPron], dict[str, WordPron]]:
        """Pronunciations made from the lexicon, kept across calls (at most :data:`KEPT_PRONS`): the words' own,
        and the spelled letters' names (with the lexicon's other readings as alternatives). Made anew when
        ``self.lexicon`` is replaced."""
        lexicon = self.lexicon
        kept = self._kept
        if kept is None or kept[0] is not lexicon:
            letters = {
                k: WordPron(k, name, "lexicon", tuple(p for p in lexicon.get(k, ()) if p != name))
                for k, name in LETTER_NAMES.items()
            }
            kept = self._kept = (lexicon, {}, letters)
        return kept[1], kept[2]

    def _guess(self, words: Sequence[str], model: ModelFn | None) -> dict[str, WordPron]:
        """The model's answers for unknown words: cached ones first, the rest in one call (long words in pieces)."""
        out: dict[str, WordPron] = {}
        todo: list[str] = []
        for w in words:
            hit = self.cache.get(w)
            if hit is not None:
                out[w] = WordPron(w, hit[0], "model", (), hit[1], cached=True)
            else:
                todo.append(w)
        if not todo:
            return out
        if model is None:
            raise LookupError(f"no model to pronounce {todo[:5]} (a lexicon-only phonemizer)")
        split = {w: pieces(w, self.max_word_chars) for w in todo}
        inputs = sorted({p for ps in split.values() for p in ps})
        answers = dict(zip(inputs, model(inputs), strict=True))
        for w, ps in split.items():
            phones = tuple(ph for p in ps for ph in answers[p][0])
            score = min((answers[p][1] for p in ps), default=0.0)
            self.cache.put(w, (phones, score))
            out[w] = WordPron(w, phones, "model", (), score)
        return out


def user_pron(word: str, over: Mapping[str, Sequence[tuple[str, ...]]], user: Lexicon, lexicon: Lexicon) -> WordPron:
    """A word of the request's overrides (first) or of the user lexicon: source "user", its other readings and the
    lexicon's as alternatives."""
    prons = tuple(over[word] if word in over else user[word])
    rest = tuple(p for p in (*prons[1:], *lexicon.get(word, ())) if p != prons[0])
    return WordPron(word, prons[0], "user", _unique(rest))


def _unique(prons: Iterable[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    seen: list[tuple[str, ...]] = []
    for p in prons:
        if p not in seen:
            seen.append(p)
    return tuple(seen)


def validate_overrides(
    overrides: Mapping[str, str], inventory: Collection[str]
) -> dict[str, tuple[tuple[str, ...], ...]]:
    """Per-request ``{word: "PH ON EMES"}`` -> lookup form; ``LexiconError`` names the bad entry."""
    from g2p.lexicon import LexiconError, user_entry

    table: dict[str, tuple[tuple[str, ...], ...]] = {}
    for word, pron in overrides.items():
        try:
            w, p = user_entry(word, pron, inventory)
        except LexiconError as exc:
            raise LexiconError(f"lexicon override {word!r}: {exc}") from exc
        table[w] = (tuple(p.split()),)
    return table
