#!/usr/bin/env bash
# Exact vs approximate search speed: every figure in benchmarks/README.md's "Search speed"
# table, each saved as JSON under benchmarks/results/. Run from the repository root:
#     benchmarks/search_speed.sh            # the 200k and 50k runs (~25 minutes on 2 cores)
#     benchmarks/search_speed.sh --1m       # plus the 1,000,000-vector run (~30 minutes more)
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE may be set for old OpenBLAS builds and slow a current
# numpy, so this process runs without them (tests and CI keep them).
set -euo pipefail
cd "$(dirname "$0")/.."
bench() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/cbir bench search "$@"; }
out=benchmarks/results

bench --n 200000 --dim 256 --queries 10000 --k 100 --index hnsw --out $out/search-200k-256-hnsw.json
bench --n 50000 --dim 512 --queries 10000 --k 100 --index flat --out $out/search-50k-512-flat.json
bench --n 200000 --dim 256 --queries 10000 --k 100 --index ivfpq --out $out/search-200k-256-ivfpq.json
bench --n 200000 --dim 256 --queries 10000 --k 100 --index hnsw --clusters 10 \
    --out $out/search-200k-256-hnsw-10clusters.json
bench --n 200000 --dim 256 --queries 10000 --k 100 --index hnsw --spectrum-power 0 \
    --out $out/search-200k-256-hnsw-isotropic.json
bench --n 200000 --dim 256 --queries 10000 --k 100 --index hnsw --clusters 10 \
    --spectrum-power 0 --sweep ef=256 --sweep ef=512 --sweep ef=1024 \
    --out $out/search-200k-256-hnsw-10clusters-isotropic.json
if [[ "${1:-}" == "--1m" ]]; then
    bench --n 1000000 --dim 256 --queries 10000 --k 100 --index hnsw \
        --out $out/search-1m-256-hnsw.json
fi
