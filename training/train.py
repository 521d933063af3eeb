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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from g2p.decoding import DecodeOptions
from g2p.lexicon import LexiconError, group, read_cmudict, read_test_split, read_tsv
from g2p.metrics import error_rates
from g2p.pipeline import transcribe
from g2p.tokenization import PAD_ID, G2PTokenizers, UnknownSymbolError
from training import checkpoint as ckpt
from training.backend import TorchBackend
from training.config import DEFAULT_TEST_SPLIT, TrainConfig, add_flags, given_fields
from training.data import Example, Splits, encode_entries, iterate_batches, make_splits, shard_batches
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
    entries = read_cmudict() if cfg.data == "cmudict" else read_tsv(cfg.data)
    test_words = set(read_test_split(cfg.test_split)) if cfg.test_split else set()
    splits = make_splits(entries, test_words, cfg.dev_words, cfg.split_seed)
    if not splits.train:
        raise LexiconError("no training entries left after removing the test and dev words")
    if tok is None:
        tok = G2PTokenizers.build([w for w, _ in splits.train], [p for _, p in splits.train])
    extra = distilled_entries(cfg.distill_data, tok, held_out=test_words | splits.words("dev"))
    train = encode_entries(tok, splits.train + extra)
    # dev words whose characters/phonemes the training data never showed cannot be scored fairly: drop them
    dev_refs = {}
    for word, prons in group(splits.dev).items():
        try:
            tok.encode_source([word])
            tok.encode_target(prons)
        except UnknownSymbolError:
            continue
        dev_refs[word] = prons
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


def checkpoint_splits(path: str | Path) -> Splits:
    """The train/dev/test split a checkpoint was trained with, rebuilt from the ``train_config`` it stores."""
    cfg = TrainConfig(**TrainConfig.stored_fields(ckpt.load_raw(path)["train_config"]))
    entries = read_cmudict() if cfg.data == "cmudict" else read_tsv(cfg.data)
    test_path = Path(cfg.test_split)
    if cfg.test_split and not test_path.is_file() and test_path.name == DEFAULT_TEST_SPLIT.name:
        test_path = DEFAULT_TEST_SPLIT  # trained in another checkout (e.g. on a GPU machine)
    test_words = set(read_test_split(test_path)) if cfg.test_split else set()
    return make_splits(entries, test_words, cfg.dev_words, cfg.split_seed)


def distilled_entries(path: str, tok: G2PTokenizers, held_out: set[str]) -> list[tuple[str, str]]:
    """The pairs of ``--distill-data`` that may be trained on: never a dev or test word, only known symbols."""
    if not path:
        return []
    kept = []
    for word, pron in read_tsv(path):
        if word in held_out:
            continue
        try:
            tok.encode_source([word])
            tok.encode_target([pron])
        except UnknownSymbolError:
            continue
        kept.append((word, pron))
    return kept


# -------------------------------------------------------------------------------------------------
# Evaluation during training
# -------------------------------------------------------------------------------------------------
def dev_error_rates(
    model: Transformer, tok: G2PTokenizers, refs: dict[str, list[str]], device: torch.device | str = "cpu"
) -> dict[str, float]:
    words = sorted(refs)
    options = DecodeOptions(beam_size=1, max_len=model.cfg.max_target_len)
    out = transcribe(TorchBackend(model, device), tok, words, options)
    hyps = {w: list(r[0].phonemes) for w, r in zip(words, out, strict=True)}
    split = {w: [p.split() for p in prons] for w, prons in refs.items()}
    plain = error_rates(hyps, split, stress=False)
    stressed = error_rates(hyps, split, stress=True)
    return {"dev_wer": plain.wer, "dev_per": plain.per, "dev_wer_stress": stressed.wer, "dev_per_stress": stressed.per}


def plot_curve(metrics_path: Path, png: Path) -> None:
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
# The training loop
# -------------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig,
    resume: dict[str, Any] | None = None,
    init: dict[str, Any] | None = None,
    init_dir: Path | None = None,
    ddp: DistContext | None = None,
) -> dict[str, Any]:
    """One run; with ``ddp`` (a torchrun process group) this process trains its share of every global batch."""
    out = Path(cfg.out)
    device = resolve_device(cfg.device) if ddp is None else ddp.device
    main_proc = ddp is None or ddp.is_main  # the one process that writes files, logs and evaluates
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # seeds CUDA too

    # 1. data and tokenizers (a resumed or continued run keeps its tokenizers)
    tok = None
    if resume is not None:
        tok = G2PTokenizers.load(out)
    elif init is not None and init_dir is not None:
        tok = G2PTokenizers.load(init_dir)
    data = prepare(cfg, tok)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        data.tok.save(out)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    # 2. model and optimiser
    if resume is not None or init is not None:
        mcfg = ModelConfig.from_dict((resume or init or {})["model_config"])
    else:
        mcfg = cfg.model_config(data.tok.src_vocab_size, data.tok.tgt_vocab_size, data.max_src, data.max_tgt)
    model = Transformer(mcfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-9,
        fused=device.type == "cuda",
    )
    amp = cfg.amp and device.type == "cuda"
    step, epoch, best_wer = 0, 0, float("inf")
    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=max(cfg.average_last, 1))
    rng = random.Random(cfg.seed)
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        step, epoch, best_wer = resume["step"], resume["epoch"], resume["best_dev_wer"]
        recent.extend(resume.get("recent_epochs", []))
        rng.setstate(_to_rng_state(resume["python_rng"]))
        torch.set_rng_state(resume["torch_rng"])
    elif init is not None:
        model.load_state_dict(init["model"])
        step = int(init["step"])
    sched = lr_schedule(opt, cfg, step)
    # every process starts from the same weights, optimiser and RNG state; DDP averages the gradients
    net = model if ddp is None else ddp.wrap(model)
    procs = "" if ddp is None else f" x {ddp.world_size} processes"
    if main_proc:
        print(
            f"model: {model.num_parameters() / 1e6:.2f}M parameters, {mcfg.d_model}d "
            f"{mcfg.n_encoder_layers}+{mcfg.n_decoder_layers} layers on {device}{procs}; data: {data.counts}",
            file=sys.stderr,
        )

    metrics_path = out / "metrics.jsonl"
    metrics = metrics_path.open("a") if main_proc else None
    start = time.monotonic()
    deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None

    def log(row: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()

    def payload(full: bool) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model_config": mcfg.to_dict(),
            "train_config": cfg.to_dict(),
            "model": _cpu(model.state_dict()),
            "step": step,
            "epoch": epoch,
            "best_dev_wer": best_wer,
        }
        if full:
            p |= {
                "optimizer": opt.state_dict(),
                "recent_epochs": list(recent),
                "python_rng": _from_rng_state(rng.getstate()),
                "torch_rng": torch.get_rng_state(),
            }
        return p

    stopped_early = False
    while epoch < cfg.epochs and not stopped_early:
        # 3. one epoch over length-bucketed batches
        model.train()
        if ddp is None:
            batches: list[Any] = list(iterate_batches(data.train, cfg.max_tokens, rng))
        else:  # the same global batches on every process (same rng), each process with its share
            batches = list(shard_batches(data.train, cfg.max_tokens, rng, ddp.rank, ddp.world_size))
        bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            dynamic_ncols=True,
            mininterval=2,
            disable=not main_proc,
        )
        tokens_seen, t0, loss_n = 0, time.monotonic(), 0
        loss_sum: torch.Tensor | float = 0.0
        for item in bar:
            batch = item if ddp is None else item.batch
            step += 1
            lr = float(sched.get_last_lr()[0])
            src, src_mask, tgt_in, tgt_out = (
                t.to(device, non_blocking=True) for t in (batch.src, batch.src_mask, batch.tgt_in, batch.tgt_out)
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(src, src_mask, tgt_in)  # (B, T, V)
            if ddp is None:
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1),
                    tgt_out.flatten(),
                    ignore_index=PAD_ID,
                    label_smoothing=cfg.label_smoothing,
                )
                grad_loss = loss
            else:
                # the global batch's loss is the mean over ALL its target tokens: this process contributes its
                # token sum / the global token count; DDP averages gradients over N processes, so N x that is
                # backpropagated and the update equals one process's on the whole global batch
                token_sum = F.cross_entropy(
                    logits.float().flatten(0, 1),
                    tgt_out.flatten(),
                    ignore_index=PAD_ID,
                    label_smoothing=cfg.label_smoothing,
                    reduction="sum",
                )
                loss = token_sum * (item.weight / item.global_target_tokens)
                grad_loss = loss * ddp.world_size
            opt.zero_grad(set_to_none=True)
            grad_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            sched.step()

            # progress and metrics are side effects
            if ddp is None:
                tokens_seen += batch.n_source_tokens + batch.n_target_tokens
            else:
                tokens_seen += item.global_source_tokens + item.global_target_tokens
            loss_sum += loss.detach()  # a tensor: no device sync per step
            loss_n += 1
            if step % cfg.log_every_steps == 0:
                if ddp is not None:  # the shares add up to the global batches' losses
                    loss_sum = ddp.sum(torch.as_tensor(loss_sum))
                mean_loss = float(loss_sum) / loss_n
                tps = tokens_seen / max(time.monotonic() - t0, 1e-9)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}")
                log(
                    {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch + 1,
                        "loss": mean_loss,
                        "lr": lr,
                        "tokens_per_s": tps,
                    }
                )
                loss_sum, loss_n = 0.0, 0
            if deadline is not None:
                late = time.monotonic() > deadline
                if ddp is not None:  # every process stops after the same step
                    late = ddp.any(late)
                if late:
                    stopped_early = True
                    break
        bar.close()
        if stopped_early:  # last.pt keeps the weights; a resume repeats this unfinished epoch
            if main_proc:
                print(f"time limit of {cfg.max_minutes} min reached in epoch {epoch + 1}; stopping", file=sys.stderr)
                ckpt.save(out / "last.pt", payload(full=True))
            break
        epoch += 1
        if main_proc:
            recent.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

        # 4. periodic dev evaluation; best and last checkpoints (rank 0 only; the others wait at the barrier)
        if main_proc and (epoch % cfg.eval_every_epochs == 0 or epoch == cfg.epochs):
            dev = dev_error_rates(model, data.tok, data.dev_refs, device)
            log({"kind": "dev", "step": step, "epoch": epoch, **dev, "minutes": (time.monotonic() - start) / 60})
            print(f"epoch {epoch}: " + ", ".join(f"{k}={v:.2f}" for k, v in dev.items()), file=sys.stderr)
            if dev["dev_wer"] < best_wer:
                best_wer = dev["dev_wer"]
                ckpt.save(out / "best.pt", payload(full=False))
        if main_proc:
            ckpt.save(out / "last.pt", payload(full=True))
            plot_curve(metrics_path, out / "learning_curve.png")
        if ddp is not None:
            ddp.barrier()

    # 5. optional checkpoint averaging over the last epochs
    summary: dict[str, Any] = {
        "step": step,
        "epoch": epoch,
        "best_dev_wer": best_wer,
        "minutes": (time.monotonic() - start) / 60,
    }
    if not main_proc:
        return summary
    if cfg.average_last > 1 and len(recent) > 1:
        model.load_state_dict(ckpt.average_state_dicts(list(recent)))
        dev = dev_error_rates(model, data.tok, data.dev_refs, device)
        log({"kind": "averaged", "step": step, "epoch": epoch, "n": len(recent), **dev})
        print(f"average of last {len(recent)} epochs: dev_wer={dev['dev_wer']:.2f}", file=sys.stderr)
        ckpt.save(out / "averaged.pt", payload(full=False) | {"averaged_epochs": len(recent)})
        summary["averaged_dev_wer"] = dev["dev_wer"]
        if dev["dev_wer"] < best_wer:
            best_wer = dev["dev_wer"]
            ckpt.save(out / "best.pt", payload(full=False) | {"averaged_epochs": len(recent)})
            summary["best_is_average"] = True
            # a later resume must compare against the average's score, not the best single epoch's
            last = ckpt.load_raw(out / "last.pt")
            ckpt.save(out / "last.pt", last | {"best_dev_wer": best_wer})
    if metrics is not None:
        metrics.close()
    plot_curve(metrics_path, out / "learning_curve.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _from_rng_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _to_rng_state(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------
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


def refuse_existing_run(out: Path) -> None:
    """A fresh run never writes into a directory that already holds files (another run's checkpoints)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out {out} already exists and is not empty: pass --resume {out / 'last.pt'} to continue that run, "
            "--overwrite to replace it, or another --out"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = given_fields(args)
    ddp: DistContext | None = None
    try:
        resume = init = None
        init_dir = None
        base: dict[str, Any] = {}
        if args.resume:
            resume = ckpt.load_raw(args.resume)
            if "optimizer" not in resume:
                raise ckpt.CheckpointError(f"{args.resume} holds weights only; resume from a run's last.pt")
            base = TrainConfig.stored_fields(resume["train_config"])
            base["out"] = str(Path(args.resume).parent)
        elif args.init_from:
            init = ckpt.load_raw(args.init_from)
            init_dir = Path(args.init_from).parent
            if "out" not in given or Path(given["out"]).resolve() == init_dir.resolve():
                raise ValueError("--init-from needs an --out directory other than the checkpoint's own")
            mc = init["model_config"]
            shape = {k: mc[k] for k in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff")}
            clash = {k: given[k] for k in shape if k in given and given[k] != shape[k]}
            if clash:
                raise ValueError(f"--init-from fixes the model shape {shape}; these flags contradict it: {clash}")
            base = TrainConfig.stored_fields(init["train_config"]) | shape
        cfg = TrainConfig(**(base | given))
        cfg.check()
        ddp = init_from_env(resolve_device(cfg.device))  # None unless torchrun started several processes
        if resume is None and not args.overwrite:
            refuse_existing_run(Path(cfg.out))
        if cfg.data != "cmudict" and not Path(cfg.data).is_file():
            raise LexiconError(f"--data: file not found: {cfg.data}")
        if cfg.test_split and not Path(cfg.test_split).is_file():
            raise LexiconError(f"--test-split: file not found: {cfg.test_split}")
        if ddp is not None:
            ddp.barrier()  # every process has checked --out before rank 0 writes into it
        summary = train(cfg, resume, init, init_dir, ddp)
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
