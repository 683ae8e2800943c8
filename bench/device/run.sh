#!/bin/bash
# Carried with: .whl (wheels of Ember's dependencies for the device's Python), .carry/llm/tok
# (a tokenizer folder) and, for the sandboxed steps, .carry/sandbox (Debian's bwrap, pasta and
# setpriv with the libraries they link: made by carry_sandbox.sh); see ../../BENCHMARKS.md for
# how each figure was run.
# Device run: cold starts by tier with the engine's CUDA graphs on (captured in the background),
# and the engine's throughput once its graphs are captured. Steps named on the command line.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee $OUT/gpu.txt
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
python3 -m compileall -q ember bench /tmp/site > /dev/null 2>&1
step() { name=$1; limit=$2; shift 2; echo "=== $name (limit $limit s)"; start=$(date +%s)
  timeout -k 5 $limit "$@" > $OUT/$name.txt 2> $OUT/$name.err; rc=$?
  tail -25 $OUT/$name.txt; tail -5 $OUT/$name.err; echo "=== $name rc=$rc in $(( $(date +%s) - start )) s"; }
sandboxed="env PATH=$PWD/.carry/sandbox/bin:$PATH:$PWD/.carry/sandbox/fallback"
[[ " $* " == *" weights "* ]] && step weights 300 python3 bench/weights.py --shapes qwen2-0.5b,llama3-8b --runs 5 --json $OUT/weights.json
[[ " $* " == *" engine "* ]] && step engine 160 python3 bench/llm.py gpu --parts engine --shapes qwen2-0.5b --batches 1,32,128 --new-tokens 64
[[ " $* " == *" cold_05b "* ]] && step cold_05b 400 python3 bench/coldstart.py --shape qwen2-0.5b --tokenizer .carry/llm/tok --gpu H100 --runs 5 --json $OUT/cold_05b.json --server-log $OUT/cold_05b.log
[[ " $* " == *" cold_8b "* ]] && step cold_8b 560 python3 bench/coldstart.py --shape llama3-8b --tokenizer .carry/llm/tok --gpu H100 --tiers fork,restore --runs 5 --json $OUT/cold_8b.json --server-log $OUT/cold_8b.log
[[ " $* " == *" serve "* ]] && step serve 560 python3 bench/llm.py gpu --parts serve --tokenizer .carry/llm/tok --concurrency 1,32,128 --runs 2 --new-tokens 128
[[ " $* " == *" sandboxed "* ]] && step gpu_check_sandboxed 120 $sandboxed python3 bench/gpu_check.py
[[ " $* " == *" sandboxed "* ]] && step cold_sandboxed 300 $sandboxed python3 bench/coldstart.py --shape qwen2-0.5b --tokenizer .carry/llm/tok --gpu H100 --tiers fork,restore --runs 3 --json $OUT/cold_sandboxed.json --server-log $OUT/cold_sandboxed.log
exit 0
