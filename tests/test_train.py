from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import PRONS, ROOT, WORDS, make_model

from g2p.decoding import DecodeOptions
from g2p.pipeline import transcribe
from training import checkpoint as ckpt
from training.backend import TorchBackend
from training.config import TrainConfig
from training.data import encode_entries, iterate_batches
from training.train import build_parser, lr_at, lr_schedule, main


def test_a_tiny_model_overfits_a_few_pairs(tokenizers, torch_threads):
    entries = list(zip(WORDS, PRONS, strict=True)) * 3  # 36 pairs
    examples = encode_entries(tokenizers, entries[:32])
    model = make_model(tokenizers, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    losses = []
    model.train()
    for _ in range(60):
        for batch in iterate_batches(examples, max_tokens=400, rng=rng):
            loss = F.cross_entropy(
                model(batch.src, batch.src_mask, batch.tgt_in).flatten(0, 1), batch.tgt_out.flatten(), ignore_index=0
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    out = transcribe(TorchBackend(model), tokenizers, WORDS, DecodeOptions(beam_size=3, max_len=16))
    assert [" ".join(r[0].phonemes) for r in out] == PRONS


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=100)
    assert lr_at(50, cfg) == pytest.approx(5e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-3)
    assert lr_at(400, cfg) == pytest.approx(5e-4)


def test_the_scheduler_sets_lr_at_of_every_update_also_after_a_resume():
    """Exactly the values the hand-written schedule set before it was a LambdaLR."""
    cfg = TrainConfig(lr=1e-3, warmup_steps=100)

    def learning_rates(done_steps: int, updates: int) -> list[float]:
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=cfg.lr)  # a fresh or a loaded optimiser: no initial_lr in its groups
        schedule = lr_schedule(opt, cfg, done_steps)
        seen = []
        for _ in range(updates):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return seen

    written = [cfg.lr * min(step / 100, math.sqrt(100 / step)) for step in range(1, 401)]
    assert learning_rates(0, 400) == written
    assert learning_rates(150, 250) == written[150:]


def test_the_model_flags_are_the_model_configs_architecture():
    cfg = TrainConfig(d_model=64, n_heads=2, d_ff=96, norm_first=False)
    model = cfg.model_config(30, 40, max_src=70)
    assert {name: getattr(model, name) for name in cfg.architecture()} == cfg.architecture()
    assert (model.src_vocab_size, model.tgt_vocab_size, model.max_source_len, model.max_target_len) == (30, 40, 70, 64)
    args = build_parser().parse_args(["--d-model", "64", "--norm-first", "false", "--lr", "0.002"])
    assert {k: v for k, v in vars(args).items() if v is not None and k != "overwrite"} == {
        "d_model": 64,
        "norm_first": False,
        "lr": 0.002,
    }


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory):
    path = tmp_path_factory.mktemp("lex") / "lex.tsv"
    rows = [f"{w}\t{p}" for w, p in zip(WORDS, PRONS, strict=True)] * 4
    path.write_text("\n".join(rows) + "\n")
    return path


TINY = ["--test-split", "", "--dev-words", "3", "--d-model", "32", "--d-ff", "64", "--n-heads", "2",
        "--threads", "1", "--log-every-steps", "1", "--warmup-steps", "10"]  # fmt: skip


@pytest.mark.slow
def test_train_then_resume_through_the_cli(lexicon, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data", str(lexicon), "--out", str(out), "--epochs", "2", "--average-last", "2", *TINY]) == 0
    for name in ("best.pt", "last.pt", "averaged.pt", "src_tokenizer.json", "tgt_tokenizer.json",
                 "metrics.jsonl", "learning_curve.png", "train_config.json"):  # fmt: skip
        assert (out / name).is_file(), name
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"train", "dev", "averaged"}
    assert main(["--resume", str(out / "last.pt"), "--epochs", "3"]) == 0
    last = ckpt.load_raw(out / "last.pt")
    assert last["epoch"] == 3
    loaded = ckpt.load_model(out / "best.pt")
    assert loaded.config.d_model == 32
    assert "optimizer" not in loaded.raw  # best.pt holds weights only
    # continue from weights only, into another directory: the step count (learning-rate schedule) goes on
    more = tmp_path / "more"
    assert main(["--init-from", str(out / "last.pt"), "--out", str(more), "--epochs", "1"]) == 0
    cont = ckpt.load_raw(more / "last.pt")
    assert cont["step"] > last["step"] and cont["model_config"] == last["model_config"]
    assert main(["--init-from", str(out / "best.pt")]) == 2  # would overwrite its own run
    assert main(["--init-from", str(out / "best.pt"), "--out", str(more), "--d-model", "64"]) == 2
    err = capsys.readouterr().err
    assert "--init-from needs an --out directory" in err and "contradict" in err


def _rows(run) -> list[dict]:
    """A run's metrics rows without the timings."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in {"minutes", "tokens_per_s"}} for r in rows]


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten_unless_asked(lexicon, tmp_path, capsys):
    """A fresh run into a directory that already holds files (another run's) stops before any work, naming
    --resume and --overwrite; the files stay as they were. With --overwrite it starts afresh there."""
    out = tmp_path / "run"
    out.mkdir()
    theirs = out / "best.pt"
    theirs.write_bytes(b"another run's weights")
    args = ["--data", str(lexicon), "--out", str(out), "--epochs", "1", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {out} already exists and is not empty" in err and "--resume" in err and "--overwrite" in err
    assert theirs.read_bytes() == b"another run's weights" and sorted(p.name for p in out.iterdir()) == ["best.pt"]
    assert main([*args, "--overwrite"]) == 0
    assert ckpt.load_raw(out / "last.pt")["epoch"] == 1 and theirs.read_bytes() != b"another run's weights"


def test_a_last_pt_from_before_the_scheduler_resumes_like_an_unbroken_run(lexicon, tmp_path):
    """A last.pt written when the learning rate was set by hand (no ``initial_lr`` in the optimiser's groups, the
    last update's ``lr``) goes on with the same learning rates, losses and dev scores as a run never stopped."""
    args = ["--data", str(lexicon), *TINY, "--max-tokens", "20", "--average-last", "0"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*args, "--out", str(whole), "--epochs", "2"]) == 0
    assert main([*args, "--out", str(split), "--epochs", "1"]) == 0
    last = ckpt.load_raw(split / "last.pt")
    for param_group in last["optimizer"]["param_groups"]:
        del param_group["initial_lr"]
        param_group["lr"] = lr_at(last["step"], TrainConfig(lr=1e-3, warmup_steps=10))
    ckpt.save(split / "last.pt", last)
    assert main(["--resume", str(split / "last.pt"), "--epochs", "2"]) == 0
    rows = _rows(whole)
    assert [r["epoch"] for r in rows if r["kind"] == "dev"] == [1, 2]
    assert _rows(split) == rows


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.train", *args], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/lexicon.tsv"], "--data: file not found: /nonexistent/lexicon.tsv"),
        (["--test-split", "/nonexistent/test"], "--test-split: file not found"),
        (["--d-model", "30", "--n-heads", "4"], "d_model (30) must be divisible by n_heads (4)"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
        (["--resume", "/nonexistent/last.pt"], "checkpoint not found"),
    ],
)
def test_cli_bad_input_fails_fast_with_a_message(args, message, tmp_path):
    proc = _cli("--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_rejects_a_malformed_tsv(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("cat\tK AE1 T\ndog D AO1 G\n")
    proc = _cli("--data", str(bad), "--test-split", "", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "bad.tsv:2: expected 'source<TAB>target'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_rejects_a_pickle_that_is_not_a_checkpoint(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"hello": object}, evil)  # needs full unpickling; weights_only refuses it
    proc = _cli("--resume", str(evil))
    assert proc.returncode == 2
    assert "not a readable checkpoint" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_refuses_cuda_where_there_is_none(lexicon, tmp_path):
    proc = _cli("--data", str(lexicon), "--out", str(tmp_path / "o"), "--device", "cuda", *TINY)
    assert proc.returncode == 2
    assert "--device cuda: CUDA is not available on this machine" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_training_on_cuda_writes_cpu_checkpoints(lexicon, tmp_path):
    out = tmp_path / "run"
    assert main(["--data", str(lexicon), "--out", str(out), "--epochs", "2", "--device", "cuda", *TINY]) == 0
    best = ckpt.load_raw(out / "best.pt")
    assert all(t.device.type == "cpu" for t in best["model"].values())
    loaded = ckpt.load_model(out / "best.pt")
    out_words = transcribe(TorchBackend(loaded.model), loaded.tokenizers, WORDS[:2], DecodeOptions(max_len=16))
    assert len(out_words) == 2
