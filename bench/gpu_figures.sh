#!/usr/bin/env bash
# Every GPU figure the README's Performance section reports, in one call on a machine with one CUDA GPU:
#   PY=.venv/bin/python bash bench/gpu_figures.sh 2>&1 | tee gpu_figures.txt
# (from the repository root, with the package installed in $PY's environment). About 5 minutes on an H100.
set -euo pipefail
PY=${PY:-python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for clients in 8 20 80; do
  echo "== step_time, $clients clients, batch 64: stacked clients under vmap (the GPU default), then one by one"
  "$PY" bench/step_time.py --clients "$clients" --batch 64 --steps 12 --repeats 2 --accelerator cuda | grep -v "^$"
  "$PY" bench/step_time.py --clients "$clients" --batch 64 --steps 12 --repeats 1 --accelerator cuda --no-batch-clients | grep -v "^$"
done
echo "== 1,000 clients, 10% a round"
"$PY" bench/many_clients.py --clients 1000 --participation 0.1 --accelerator gpu
echo "== 80 clients on one GPU, plain and through the client-sharding strategy (its overhead on one device)"
"$PY" bench/ddp_scaling.py --clients 80 --processes 1 --batch 64 --accelerator gpu --strategy-on-one
