#!/usr/bin/env bash
# One short GPU session: the CUDA decode benchmark, then the amazon-beauty `gpu` budget of the
# quality benchmark (TIGER-size retriever, SASRec trained beside it on the same GPU).
#
#   bash benchmarks/gpu_session.sh
#
# Prepared on any machine beforehand (the GPU machine need not reach the data or the encoder
# weights; the ID table is the same as the CPU budget's):
#   mmqrec run configs/bench/amazon-beauty.gpu.yaml --out runs/quality-amazon-beauty-gpu --until tokenize
# Packages the GPU machine may lack (polars, recbole and its small helpers, pandas 2 where it
# has pandas 3) are installed from wheels in $WHEELS, only where
# missing; fetch them beforehand, on a machine that reaches the package registry, with
#   bash benchmarks/gpu_session.sh --fetch-wheels      (Python 3.12, x86_64 Linux; ~50 MB)
# Results land in benchmarks/results/ and, when $OUT is set, are copied there with the run's
# small artefacts (metrics, logs, report).
set -u
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/quality-amazon-beauty-gpu}
WHEELS=${WHEELS:-runs/wheels}
DECODE_SECONDS=${DECODE_SECONDS:-120}
PY=${PYTHON:-python3}
if [ "${1:-}" = --fetch-wheels ]; then
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" \
    polars==1.30.0 recbole==1.2.1 colorlog==4.7.2 colorama==0.4.4 texttable thop tabulate \
    "pandas>=2.2,<3" pytz tzdata
fi
EXTRA=("$@")   # extra arguments for quality.py (e.g. --set overrides for a rehearsal)
started=$(date +%s)
stamp() { echo "[gpu_session +$(( $(date +%s) - started ))s] $*"; }

SITE=$(mktemp -d)
need() {  # need MODULE WHEEL_GLOB...: install the wheels when MODULE does not import
  local module=$1; shift
  if ! "$PY" -c "import $module" 2>/dev/null; then
    local files=()
    for g in "$@"; do files+=( $WHEELS/$g ); done
    stamp "installing ${files[*]}"
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "${files[@]}" || stamp "install of $module failed"
  fi
}
if [ -d "$WHEELS" ]; then
  need polars 'polars-*.whl'
  need recbole 'recbole-*.whl' 'colorlog-*.whl' 'colorama-*.whl' 'texttable-*.whl' 'thop-*.whl' 'tabulate-*.whl'
  # RecBole 1.2.1 fails on pandas 3 (its ID remapping assigns a list of arrays to a column).
  if ! "$PY" -c "import sys, pandas; sys.exit(int(pandas.__version__.split('.')[0]) >= 3)" 2>/dev/null \
     && ls $WHEELS/pandas-2*.whl >/dev/null 2>&1; then
    stamp "pandas >= 3: installing the carried pandas 2 for RecBole"
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" $WHEELS/pandas-2*.whl \
      $WHEELS/pytz-*.whl $WHEELS/tzdata-*.whl || stamp "install of pandas failed"
  fi
fi
export PYTHONPATH="$SITE:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"   # the project itself need not be installed
export MMQREC_NO_PROGRESS=1
"$PY" - <<'EOF'
import platform, numpy, pandas, polars, torch, transformers
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {platform.python_version()} torch {torch.__version__} cuda {torch.version.cuda} "
      f"transformers {transformers.__version__} numpy {numpy.__version__} pandas {pandas.__version__} "
      f"polars {polars.__version__}; {gpu}")
EOF

stamp "decode benchmark"
[ "${SKIP_DECODE:-0}" = 1 ] || timeout "$DECODE_SECONDS" "$PY" benchmarks/decode.py --device cuda --dtype bf16 --sizes 12k,1m \
  --beams 20,50 --batch-size 1024 --queries 8192 --hf-queries 64 --hf-batch-size 32 --repeats 2 \
  --results benchmarks/results/decode_cuda || stamp "decode benchmark stopped (exit $?)"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/results"; cp benchmarks/results/decode_cuda.* "$OUT/results/" 2>/dev/null; fi

stamp "quality benchmark, amazon-beauty, gpu budget"
"$PY" benchmarks/quality.py --dataset amazon-beauty --budget gpu --out "$RUN" \
  --stages-from train-retriever --concurrent-baselines --baselines-timeout 60 \
  --note "Data, encode and tokenize ran beforehand on CPU (the same ID table as the cpu budget); the retriever and the baselines on the GPU." \
  "${EXTRA[@]}" || stamp "quality benchmark failed (exit $?)"
stamp "done"

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/results" "$OUT/run"
  cp benchmarks/results/decode_cuda.* benchmarks/results/quality_amazon-beauty_gpu* "$OUT/results/" 2>/dev/null
  (cd "$RUN" && find . -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.html' -o -name '*.png' \
     -o -name 'candidates.parquet' -o -name 'ranked*.parquet' -o -name 'model.safetensors' | grep -v '/checkpoint' \
     | tar -cf - -T - ) | tar -xf - -C "$OUT/run"
fi
