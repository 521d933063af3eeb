#!/usr/bin/env bash
# One call on a lent GPU machine (issue 14): train several teacher models side by side, score them and their ensemble
# on the shared 5,000-word dev set, and label words with the ensemble's beam output for distillation.
#
#   python -m training.device_pack pack .gpu      # here, once
#   PACK=.gpu training/gpu_teachers.sh OUT_DIR    # there (env: TEACH_MIN=4.5 WORDS=.gpu/unlabeled_25k.txt)
#
# Prepared here, run there through the device tool; everything it brings back lies in OUT_DIR (at most 8 files):
# tN.best.fp16.pt (the 3 teachers best on dev, float16), distill.tar.gz (word<TAB>phonemes from the ensemble),
# records.tar.gz (each run's log, metrics, config, tokenizers; the ensemble's reports), report.txt (this log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:?usage: training/gpu_teachers.sh OUT_DIR}
TEACH_MIN=${TEACH_MIN:-4.5}
DISTILL_S=${DISTILL_S:-170}  # labelling stops after this long; what it labelled so far comes back
WORDS=${WORDS:-.gpu/unlabeled_25k.txt}
RUNS=${RUNS:-/tmp/teachers}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}  # more training flags, last wins (a CPU smoke test: DEVICE=cpu EXTRA="--data small.tsv ...")
mkdir -p "$OUT_DIR" "$RUNS"
REPORT="$OUT_DIR/report.txt"
exec > >(tee -a "$REPORT") 2>&1
export PYTHONUNBUFFERED=1
if [[ -n "${PACK:-}" ]]; then  # the dictionary and stand-ins made by training.device_pack (see its docstring)
    python3 -m training.device_pack unpack "$PACK" /tmp/site || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    [[ -f "$WORDS.xz" ]] && python3 -c "import lzma, sys; open(sys.argv[1], 'wb').write(lzma.open(sys.argv[1] + '.xz').read())" "$WORDS"
fi
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))'
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' || true

# 1. teachers, all on the same dev split (--split-seed), each with its own seed / shape
common=(--dev-words 5000 --split-seed 1234 --device "$DEVICE" --amp true --threads 2 --epochs 400
        --test-split data/cmudict-0.7b.test --max-minutes "$TEACH_MIN" --average-last 5 --log-every-steps 100
        --eval-every-epochs 5)
declare -A SHAPE=(
    [t1]="--seed 11 --d-model 256 --d-ff 1024 --dropout 0.15 --max-tokens 4000 --lr 1.5e-3"
    [t2]="--seed 12 --d-model 256 --d-ff 1024 --dropout 0.15 --max-tokens 4000 --lr 1.5e-3"
    [t3]="--seed 13 --d-model 256 --d-ff 1024 --dropout 0.2 --max-tokens 4000 --lr 1.5e-3"
    [t4]="--seed 14 --d-model 256 --d-ff 1024 --n-encoder-layers 4 --n-decoder-layers 4 --dropout 0.2 --max-tokens 4000 --lr 1.5e-3"
    [t5]="--seed 15 --d-model 256 --d-ff 1024 --n-encoder-layers 4 --n-decoder-layers 4 --dropout 0.15 --max-tokens 4000 --lr 1.5e-3"
)
pids=()  # waited for by id: a bare `wait` would also wait for the tee above
for t in "${!SHAPE[@]}"; do
    # shellcheck disable=SC2086
    python3 -m training.train --out "$RUNS/$t" "${common[@]}" ${SHAPE[$t]} $EXTRA > "$RUNS/$t.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
for t in $(printf '%s\n' "${!SHAPE[@]}" | sort); do
    echo "== $t: ${SHAPE[$t]}"; grep -E "^epoch|average|error|Error" "$RUNS/$t.log" | tail -4
done
mapfile -t TEACHERS < <(ls "$RUNS"/t*/best.pt)
echo "teachers: ${TEACHERS[*]}"; date -u

# 2. distillation data (both jobs share the GPU), then the ensemble's dev score
timeout "$DISTILL_S" python3 -m training.distill --teacher "${TEACHERS[@]}" --words train --device "$DEVICE" --batch-size 1024 \
    --out "$RUNS/distill_train.tsv" > "$RUNS/distill_train.log" 2>&1 &
pids=($!)
if [[ -f "$WORDS" ]]; then
    timeout "$DISTILL_S" python3 -m training.distill --teacher "${TEACHERS[@]}" --words "$WORDS" --device "$DEVICE" --batch-size 1024 \
        --out "$RUNS/distill_unlabeled.tsv" > "$RUNS/distill_unlabeled.log" 2>&1 &
    pids+=($!)
fi
for split in dev test; do  # test: the teachers are not shipped; their ensemble's test score is a reference point
    timeout 85 python3 -m training.evaluate --checkpoint "${TEACHERS[@]}" --split $split --beam 1 5 --device "$DEVICE" \
        --batch-size 1024 --report "$RUNS/ensemble_$split" 2>&1 | grep -v "it/s\|word/s"
done
wait "${pids[@]}"
tail -n 2 "$RUNS"/distill_*.log; date -u

# 3. what comes back (at most 8 files of <= 16 MiB, 64 MiB in all): the 3 teachers best on dev in float16 (half the
#    bytes; they only label data), the labelled words, and every run's records
python3 - "$RUNS" "$OUT_DIR" <<'EOF'
import json
import sys
from pathlib import Path

import torch

runs, out = Path(sys.argv[1]), Path(sys.argv[2])
done = [d for d in sorted(runs.glob("t*")) if (d / "summary.json").is_file() and (d / "best.pt").is_file()]
done.sort(key=lambda d: json.loads((d / "summary.json").read_text())["best_dev_wer"])
for d in done[:3]:
    raw = torch.load(d / "best.pt", map_location="cpu", weights_only=True)
    raw["model"] = {k: v.half() if v.is_floating_point() else v for k, v in raw["model"].items()}
    torch.save(raw, out / f"{d.name}.best.fp16.pt")
    print(f"{d.name}: best dev WER {json.loads((d / 'summary.json').read_text())['best_dev_wer']:.2f}, brought back")
EOF
(cd "$RUNS" && tar -czf "$OUT_DIR/distill.tar.gz" $(ls distill_*.tsv distill_*.tsv.partial 2>/dev/null))
cp "$REPORT" "$RUNS/report.txt"
(cd "$RUNS" && tar -czf "$OUT_DIR/records.tar.gz" --exclude='*.pt' --exclude='*.png' \
    $(ls -d t? t?.log ensemble_*.* distill_*.log report.txt 2>/dev/null))
ls -la "$OUT_DIR"; date -u
