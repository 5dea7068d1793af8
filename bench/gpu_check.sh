#!/usr/bin/env bash
# The one prepared GPU check (issue 11), for a machine with an NVIDIA GPU; about 8 minutes on an H100.
#
#   bash bench/gpu_check.sh [RESULTS_DIR]      (default bench/results)
#
# 1. the kernel tests natively (real tile sizes, autotuning, fp16/bf16/fp32, TF32 tolerance test);
# 2. bench/latency.py on a BERT-base-shaped model (random weights: speed only, nothing downloaded) at
#    half the parameters: dense eager/sdpa, compact torch and compact Triton, batch 1/8/32 x seq
#    128/384 x fp16/bf16/fp32, plus real SQuAD lengths padded vs unpadded; its JSON and PNG go to
#    RESULTS_DIR/<device>-<date>.{json,png} and it prints the targets as ratios from one run.
# Uses the machine's own torch/triton/transformers (nothing is installed or fetched).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-bench/results}
mkdir -p "$results"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu_check.sh needs a CUDA GPU')" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
stamp=$(date +%F)

timeout 240 $PY -m pytest tests/kernels -x -q -p no:cacheprovider -o addopts="" 2>&1 | tee "$results/gpu-kernel-tests-$stamp.txt" | tail -15
tests=${PIPESTATUS[0]}

dev=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
timeout 330 $PY bench/latency.py --model bert-base-random --target 0.5 --out "$results/$dev-$stamp.json" 2>&1 | tee "$results/gpu-latency-$stamp.txt"
latency=${PIPESTATUS[0]}
echo "kernel tests exit $tests, latency exit $latency"
exit $(( tests || latency ))
