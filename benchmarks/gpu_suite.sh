#!/usr/bin/env bash
# The GPU measurements in one go (run by hand on a CUDA machine; CI never runs it).
#
#   bash benchmarks/gpu_suite.sh OUTDIR            (STEPS="clr embed scan scale" by default)
#
# Needs the benchmark data (DQAUDIT_SHARED_DATA, default ../shared/data) and a Python with
# dqaudit's dependencies (PYTHON, default python3). Each step writes its log to OUTDIR:
#   clr_speed.txt   200 CLR probes batched on the GPU vs one after another (issue: < 5 s)
#   embed.json      embed stage vs raw forward rate on the GPU, by decode-worker count
#   scan.json       stage timings of `dqaudit scan` on CIFAR-10N (aggre) on the GPU
#   scale.json      kNN graph + whole scoring stage at 100k and 1M synthetic samples
#   finetune/       cross-fitted fine-tuned posteriors, CIFAR-10N aggre (finetune_posteriors.py)
#   decode/         2-MP and 12-MP JPEGs through the embed stage, CPU workers vs nvjpeg
#   finetune_rest/  the other CIFAR-10N sets, a CIFAR-10H simulation seed, aggre subsets
# Score the fine-tuned posteriors anywhere: detect_quality.py --finetuned OUTDIR/finetune
# (and finetune_rest), cleaning_efficiency.py --finetuned ...; gpu_decode.py --probe OUTDIR/decode
set -uo pipefail
OUTDIR=${1:?usage: gpu_suite.sh OUTDIR}
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 DQAUDIT_CACHE_DIR=${DQAUDIT_CACHE_DIR:-$(mktemp -d)}
DATA=${DQAUDIT_SHARED_DATA:-$HERE/../../shared/data}
STEPS=" ${STEPS:-clr embed scan scale finetune decode finetune_rest} "
step() { [[ "$STEPS" == *" $1 "* ]]; }

nvidia-smi -L | tee "$OUTDIR/device.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cpus', __import__('os').cpu_count())" \
    | tee -a "$OUTDIR/device.txt"

step clr && echo "== CLR probes" && timeout 240 "$PY" "$HERE/clr_speed.py" --device cuda --loop-probes 20 2>&1 | tee "$OUTDIR/clr_speed.txt"

step embed && echo "== embed stage" && timeout 240 "$PY" "$HERE/embed_throughput.py" --device cuda --n 5000 --repeat 4 \
    --workers 4 8 15 --json "$OUTDIR/embed.json" 2>&1 | tee "$OUTDIR/embed.txt"

if step scan; then
echo "== scan CIFAR-10N aggre"
SCAN=$(mktemp -d)
time timeout 300 "$PY" -m dqaudit scan "$DATA/cifar10n/labels.csv" \
    --path-column file --label-column aggre --no-report --device cuda --out "$SCAN" \
    2>&1 | tail -40 | tee "$OUTDIR/scan.txt"
cp "$SCAN/summary.json" "$OUTDIR/scan.json" 2>/dev/null
fi

step scale && echo "== scale" && timeout 400 "$PY" "$HERE/scale.py" --device cuda --sizes 100000 1000000 --recall-n 100000 \
    --json "$OUTDIR/scale.json" 2>&1 | tail -20 | tee "$OUTDIR/scale.txt"

step finetune && echo "== fine-tuned posteriors, CIFAR-10N aggre" && timeout 200 "$PY" "$HERE/finetune_posteriors.py" \
    --out "$OUTDIR/finetune" --device cuda --sets aggre --cifar10h-seeds 2>&1 | tee "$OUTDIR/finetune.txt"

step decode && echo "== photo JPEGs: CPU decode vs nvjpeg" && timeout 150 "$PY" "$HERE/gpu_decode.py" \
    --out "$OUTDIR/decode" --n 2000 --n-12mp 300 --workers 15 2>&1 | tee "$OUTDIR/decode.txt"

step finetune_rest && echo "== fine-tuned posteriors, the rest" && timeout 300 "$PY" "$HERE/finetune_posteriors.py" \
    --out "$OUTDIR/finetune_rest" --device cuda --sets worst random1 random2 random3 \
    --cifar10h-seeds 0 --subsets 1000 2500 --deadline ${FINETUNE_DEADLINE:-200} 2>&1 | tee "$OUTDIR/finetune_rest.txt"
