from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
    MODEL_STATE_UNLOADED: _ClassVar[ModelState]

class Alphabet(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALPHABET_UNSPECIFIED: _ClassVar[Alphabet]
    ALPHABET_ARPABET: _ClassVar[Alphabet]
    ALPHABET_ARPABET_NO_STRESS: _ClassVar[Alphabet]
    ALPHABET_IPA: _ClassVar[Alphabet]

class TokenKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_KIND_UNSPECIFIED: _ClassVar[TokenKind]
    TOKEN_KIND_WORD: _ClassVar[TokenKind]
    TOKEN_KIND_NUMBER: _ClassVar[TokenKind]
    TOKEN_KIND_ABBREVIATION: _ClassVar[TokenKind]
    TOKEN_KIND_INITIALISM: _ClassVar[TokenKind]
    TOKEN_KIND_PUNCTUATION: _ClassVar[TokenKind]
    TOKEN_KIND_SYMBOL: _ClassVar[TokenKind]
    TOKEN_KIND_URL: _ClassVar[TokenKind]
    TOKEN_KIND_EMAIL: _ClassVar[TokenKind]
    TOKEN_KIND_SKIPPED: _ClassVar[TokenKind]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_LEXICON: _ClassVar[Source]
    SOURCE_USER: _ClassVar[Source]
    SOURCE_MODEL: _ClassVar[Source]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_FAILED: ModelState
MODEL_STATE_UNLOADED: ModelState
ALPHABET_UNSPECIFIED: Alphabet
ALPHABET_ARPABET: Alphabet
ALPHABET_ARPABET_NO_STRESS: Alphabet
ALPHABET_IPA: Alphabet
TOKEN_KIND_UNSPECIFIED: TokenKind
TOKEN_KIND_WORD: TokenKind
TOKEN_KIND_NUMBER: TokenKind
TOKEN_KIND_ABBREVIATION: TokenKind
TOKEN_KIND_INITIALISM: TokenKind
TOKEN_KIND_PUNCTUATION: TokenKind
TOKEN_KIND_SYMBOL: TokenKind
TOKEN_KIND_URL: TokenKind
TOKEN_KIND_EMAIL: TokenKind
TOKEN_KIND_SKIPPED: TokenKind
SOURCE_UNSPECIFIED: Source
SOURCE_LEXICON: Source
SOURCE_USER: Source
SOURCE_MODEL: Source

class GenerateOptions(_message.Message):
    __slots__ = ("beam_size", "num_hypotheses", "max_output_tokens", "length_penalty")
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    beam_size: int
    num_hypotheses: int
    max_output_tokens: int
    length_penalty: float
    def __init__(self, beam_size: _Optional[int] = ..., num_hypotheses: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., length_penalty: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("inputs", "options", "model", "model_version")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    options: GenerateOptions
    model: str
    model_version: int
    def __init__(self, inputs: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[GenerateOptions, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class Hypothesis(_message.Message):
    __slots__ = ("text", "tokens", "score", "logprob", "finished")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    text: str
    tokens: _containers.RepeatedScalarFieldContainer[str]
    score: float
    logprob: float
    finished: bool
    def __init__(self, text: _Optional[str] = ..., tokens: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ..., logprob: _Optional[float] = ..., finished: _Optional[bool] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("input", "hypotheses")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    input: str
    hypotheses: _containers.RepeatedCompositeFieldContainer[Hypothesis]
    def __init__(self, input: _Optional[str] = ..., hypotheses: _Optional[_Iterable[_Union[Hypothesis, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("outputs", "model", "model_version")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    model: str
    model_version: int
    def __init__(self, outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class TokenEvent(_message.Message):
    __slots__ = ("token", "position")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    token: str
    position: int
    def __init__(self, token: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("index", "token", "final", "model", "model_version")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    index: int
    token: TokenEvent
    final: Output
    model: str
    model_version: int
    def __init__(self, index: _Optional[int] = ..., token: _Optional[_Union[TokenEvent, _Mapping]] = ..., final: _Optional[_Union[Output, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_inputs", "max_input_chars", "max_output_tokens", "max_beam_size", "max_message_bytes", "max_texts", "max_text_chars")
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_inputs: int
    max_input_chars: int
    max_output_tokens: int
    max_beam_size: int
    max_message_bytes: int
    max_texts: int
    max_text_chars: int
    def __init__(self, max_inputs: _Optional[int] = ..., max_input_chars: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., max_beam_size: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_texts: _Optional[int] = ..., max_text_chars: _Optional[int] = ...) -> None: ...

class TensorDescription(_message.Message):
    __slots__ = ("name", "datatype", "shape", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    description: str
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., description: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "state", "execution_providers", "variant", "error", "created", "checkpoint_sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: ModelState
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    variant: str
    error: str
    created: str
    checkpoint_sha256: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., execution_providers: _Optional[_Iterable[str]] = ..., variant: _Optional[str] = ..., error: _Optional[str] = ..., created: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "default_version", "versions", "limits", "source_alphabet", "inputs", "outputs", "lexicon_words", "user_lexicon_words")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ALPHABET_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LEXICON_WORDS_FIELD_NUMBER: _ClassVar[int]
    USER_LEXICON_WORDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_version: int
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    limits: Limits
    source_alphabet: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorDescription]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorDescription]
    lexicon_words: int
    user_lexicon_words: int
    def __init__(self, name: _Optional[str] = ..., default_version: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., source_alphabet: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorDescription, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorDescription, _Mapping]]] = ..., lexicon_words: _Optional[int] = ..., user_lexicon_words: _Optional[int] = ...) -> None: ...

class PhonemizeOptions(_message.Message):
    __slots__ = ("alphabet", "lexicon")
    class LexiconEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ALPHABET_FIELD_NUMBER: _ClassVar[int]
    LEXICON_FIELD_NUMBER: _ClassVar[int]
    alphabet: Alphabet
    lexicon: _containers.ScalarMap[str, str]
    def __init__(self, alphabet: _Optional[_Union[Alphabet, str]] = ..., lexicon: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PhonemizeRequest(_message.Message):
    __slots__ = ("texts", "options", "model", "model_version")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    options: PhonemizeOptions
    model: str
    model_version: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[PhonemizeOptions, _Mapping]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class SpokenWord(_message.Message):
    __slots__ = ("word", "phonemes", "source", "alternatives", "score")
    WORD_FIELD_NUMBER: _ClassVar[int]
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ALTERNATIVES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    word: str
    phonemes: str
    source: Source
    alternatives: _containers.RepeatedScalarFieldContainer[str]
    score: float
    def __init__(self, word: _Optional[str] = ..., phonemes: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., alternatives: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ...) -> None: ...

class TextToken(_message.Message):
    __slots__ = ("text", "start", "end", "kind", "words", "skip_reason")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: int
    end: int
    kind: TokenKind
    words: _containers.RepeatedCompositeFieldContainer[SpokenWord]
    skip_reason: str
    def __init__(self, text: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., kind: _Optional[_Union[TokenKind, str]] = ..., words: _Optional[_Iterable[_Union[SpokenWord, _Mapping]]] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class TextResult(_message.Message):
    __slots__ = ("phonemes", "tokens")
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    phonemes: str
    tokens: _containers.RepeatedCompositeFieldContainer[TextToken]
    def __init__(self, phonemes: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[TextToken, _Mapping]]] = ...) -> None: ...

class PhonemizeResponse(_message.Message):
    __slots__ = ("results", "model", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TextResult]
    model: str
    model_version: int
    def __init__(self, results: _Optional[_Iterable[_Union[TextResult, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...
