#!/bin/bash
# Carried with: .whl (wheels of Ember's dependencies for the device's Python) and .carry/llm/tok
# (a tokenizer folder); see ../../BENCHMARKS.md for how each figure was run.
# Profile the gateway (server) and the replica while bench/llm.py serves at c 128 through Ember.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 bench/llm.py gpu --parts serve --tokenizer .carry/llm/tok --concurrency 128 --runs 6 --new-tokens 256 > $OUT/prof_serve.txt 2>&1 &
bench=$!
for i in $(seq 240); do
  grep -q "run 1 c128 engine" $OUT/prof_serve.txt 2>/dev/null && break; sleep 1; done
sleep 1
server=$(pgrep -f ember.cli.main | head -1)
template=$(pgrep -f ember.runtime.template | head -1)
replica=$(pgrep -P $template | head -1)
ps -o pid,ppid,comm,args -p $server,$template,$replica > $OUT/pids.txt
py-spy record -p $server -r 250 -f raw -o $OUT/gw.txt -d 40 --nonblocking > $OUT/spy_gw.log 2>&1 &
py-spy record -p $replica -r 250 -f raw -o $OUT/rep.txt -d 40 --nonblocking > $OUT/spy_rep.log 2>&1 &
wait $bench
grep -v "^ " $OUT/prof_serve.txt | tail -8
wait
