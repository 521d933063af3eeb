"""Training on several processes (torchrun + DDP): the same global batches, the same updates, one writer."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import PRONS, ROOT, WORDS, make_model

from training.data import collate, encode_entries, shard_batches, token_batches
from training.train import main


@pytest.fixture(scope="module")
def examples(tokenizers):
    return encode_entries(tokenizers, list(zip(WORDS, PRONS, strict=True)) * 3)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_shards_of_every_process_make_up_the_single_process_batches(examples, world):
    single = token_batches(examples, 20, random.Random(7))
    shards = [list(shard_batches(examples, 20, random.Random(7), rank, world)) for rank in range(world)]
    assert all(len(s) == len(single) for s in shards)  # every process runs every step
    stand_ins = 0
    for i, idx in enumerate(single):
        target_tokens = sum(len(examples[j].tgt) for j in idx)
        for rank in range(world):
            shard = shards[rank][i]
            mine = idx[rank::world]
            assert shard.global_target_tokens == target_tokens
            assert shard.global_source_tokens == sum(len(examples[j].src) for j in idx)
            assert shard.weight == (1.0 if mine else 0.0)
            expected = collate([examples[j] for j in (mine or idx[:1])])
            assert torch.equal(shard.batch.src, expected.src) and torch.equal(shard.batch.tgt_out, expected.tgt_out)
            stand_ins += not mine
    if world == 3:
        assert stand_ins > 0  # some global batches are smaller than the world: a process computes weight 0
    with pytest.raises(ValueError, match="rank 2 is not in"):
        next(shard_batches(examples, 20, random.Random(7), 2, 2))


def test_the_shard_losses_give_the_single_process_gradient(tokenizers, examples, torch_threads):
    """token sum / global tokens x N per process, averaged over N (what DDP does) = the global batch's mean loss."""
    model = make_model(tokenizers, seed=5)
    model.train()
    batch_idx = max(token_batches(examples, 20, random.Random(3)), key=len)
    world = len(batch_idx) + 1  # one process gets no example

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    def logits_and_targets(batch):
        return model(batch.src, batch.src_mask, batch.tgt_in).flatten(0, 1), batch.tgt_out.flatten()

    logits, target = logits_and_targets(collate([examples[i] for i in batch_idx]))
    single = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=0.1)
    expected = grads(single)
    total_loss, total_grads = 0.0, [torch.zeros_like(g) for g in expected]
    for rank in range(world):
        shard = next(shard_batches([examples[i] for i in batch_idx], 10_000, random.Random(0), rank, world))
        logits, target = logits_and_targets(shard.batch)
        token_sum = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=0.1, reduction="sum")
        loss = token_sum * (shard.weight / shard.global_target_tokens)
        total_loss += loss.item()
        for acc, g in zip(total_grads, grads(loss * world), strict=True):
            acc.add_(g / world)
    assert total_loss == pytest.approx(single.item(), abs=1e-6)
    for got, want in zip(total_grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------------------------------------
# Two real processes (gloo on the CPU) against one
# -------------------------------------------------------------------------------------------------
TINY = ["--test-split", "", "--dev-words", "3", "--d-model", "32", "--d-ff", "64", "--n-heads", "2",
        "--threads", "1", "--log-every-steps", "1", "--warmup-steps", "10", "--dropout", "0",
        "--max-tokens", "20"]  # fmt: skip
# dropout 0: with dropout the masks depend on how a batch is split, so only the distribution would match


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"}}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(path, kind):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_rank_0_writes(lexicon, tmp_path, capsys):
    one, two, elsewhere = tmp_path / "one", tmp_path / "two", tmp_path / "rank1-out"
    assert main(["--data", str(lexicon), "--out", str(one), "--epochs", "2", *TINY]) == 0
    capsys.readouterr()

    # epoch 1 on two processes started as torchrun starts them (env); rank 1 is given its own --out, which
    # it must never create
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "training.train", "--data", str(lexicon), "--out", str(out), "--epochs", "1", *TINY],
            cwd=ROOT,
            env=_env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, out in enumerate((two, elsewhere))
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    (out0, err0), (out1, err1) = results
    assert not elsewhere.exists()
    assert out1 == "" and "model:" not in err1 and "epoch" not in err1  # no summary, log line or tqdm bar
    assert len(out0.splitlines()) == 1 and "x 2 processes" in err0

    # epoch 2: every rank resumes from rank 0's last.pt, through torchrun itself
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "training.train", "--resume", str(two / "last.pt"), "--epochs", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert sum(line.startswith("{") for line in resumed.stdout.splitlines()) == 1

    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    single, double = _rows(one / "metrics.jsonl", "train"), _rows(two / "metrics.jsonl", "train")
    assert [r["step"] for r in double] == [r["step"] for r in single] == list(range(1, 25))  # no row twice
    diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(single, double, strict=True))
    print(f"max |loss(1 process) - loss(2 processes)| over {len(single)} steps: {diff:.2e}")
    assert diff < 1e-5
    assert [r["epoch"] for r in _rows(two / "metrics.jsonl", "dev")] == [1, 2]
    assert len(_rows(two / "metrics.jsonl", "averaged")) == 1


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory):
    path = tmp_path_factory.mktemp("lex") / "lex.tsv"
    path.write_text("".join(f"{w}\t{p}\n" for w, p in zip(WORDS, PRONS, strict=True)) * 4)
    return path
