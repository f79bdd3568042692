#!/usr/bin/env bash
# Every benchmark in benchmarks/ plus `nopelens reproduce --profile full`, on a CUDA device,
# into one JSON file. Meant for a few minutes of device time (default budget 540 s, one 10-minute
# remote command); each step has its own time cap and the full profile gets what is left.
#
# Usage:  bash benchmarks/gpu.sh [RESULTS_JSON]        (default: ${OUT:-.}/gpu_results.json)
#   GPU_BUDGET=540   total seconds for all steps (the reproduce step gets the rest)
#   PYTHON=python3   interpreter (default: .venv/bin/python if it imports torch, else python3)
#   GPU_THREADS=8    torch CPU threads for the benchmarks
#
# It stops at once, with exit status 2 and a one-line reason (also written to the JSON), when
# torch sees no CUDA device or a package nopelens needs is missing; it never falls back to the
# CPU. Otherwise it runs every step even if one fails, writes the JSON (per step: command, exit
# status, ok / failed / timeout, wall seconds, the step's own JSON figures where it writes them,
# and the end of its output) and a full log beside it, and exits 1 if any step did not finish.
# Nothing is fetched from the network. Steps:
#   bench_analyze.py  --device cuda: analyze / forward, NC per matrix (torch on the GPU against
#                     the CPU paths), n = 4096 on the GPU
#   bench_probe.py    --device cuda (the 100k-token probes; the sklearn comparison is skipped)
#   bench_sweep.py    a 12-configuration in-process subset of the paper preset, then the
#                     end-to-end local sweep, device "cuda", no Ray (capped)
#   bench_train.py    every task, NoPE and learned PE, device cuda (capped: partial lines kept)
#   bench_coverage.py --quick (a CPU simulation; run so that every benchmark is covered)
#   theory_breakdown.py / theory_width.py  on cuda, with small sizes
#   any other benchmarks/*.py (not starting with "_"), with no arguments
#   bench_reproduce.py --profile full --device cuda: `nopelens reproduce --profile full` with
#                     per-part seconds (the rest of the budget)
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
RESULTS="${1:-${OUT:-.}/gpu_results.json}"
mkdir -p "$(dirname "$RESULTS")"
RESULTS="$(cd "$(dirname "$RESULTS")" && pwd)/$(basename "$RESULTS")"
LOG="${RESULTS%.json}.log"
BUDGET="${GPU_BUDGET:-540}"
THREADS="${GPU_THREADS:-8}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nopelens-gpu.XXXXXX")"
START="$(date +%s)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$LOG"

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi

fail_fast() { # reason -> one line on stderr, a JSON with the reason, exit 2
    echo "gpu.sh: $1" | tee -a "$LOG" >&2
    "$PYTHON" - "$RESULTS" "$1" <<'EOF' 2>/dev/null || printf '{"status": "not_run"}\n' >"$RESULTS"
import json, sys
json.dump({"status": "not_run", "reason": sys.argv[2]}, open(sys.argv[1], "w"), indent=2)
EOF
    rm -rf "$WORK"
    exit 2
}

# ---- preflight: CUDA and the packages nopelens needs, before any work --------------------------
command -v "$PYTHON" >/dev/null 2>&1 || fail_fast "no Python interpreter '$PYTHON'"
PREFLIGHT="$("$PYTHON" - <<'EOF' 2>&1
import importlib, sys
try:
    import torch
except Exception as error:
    print(f"torch does not import ({error})"); sys.exit(1)
if not torch.cuda.is_available():
    print(f"no CUDA device visible to torch {torch.__version__} (CUDA build "
          f"{torch.version.cuda}); this script runs only on a CUDA machine and never on the CPU")
    sys.exit(1)
missing = []
for name in ("numpy", "pandas", "scipy", "sklearn", "plotly", "jaxtyping", "lazy_loader",
             "tqdm", "transformer_lens", "nopelens"):
    try:
        importlib.import_module(name)
    except Exception as error:
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    print("missing Python packages: " + "; ".join(missing) + ". Install them first "
          "(offline: pip install --no-index from wheels) or set PYTHON")
    sys.exit(1)
print(f"ok: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
EOF
)" || fail_fast "${PREFLIGHT##*$'\n'}"
echo "gpu.sh: $PREFLIGHT; budget ${BUDGET} s; python $PYTHON; results $RESULTS" | tee -a "$LOG"
"$PYTHON" -c "import json, sys; sys.path.insert(0, 'benchmarks'); import _machine; \
print(json.dumps(_machine.machine_info()))" >"$WORK/machine.json" 2>>"$LOG"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    >"$WORK/nvidia_smi.txt" 2>&1 || true

# ---- steps -------------------------------------------------------------------------------------
: >"$WORK/steps.tsv"
remaining() { echo $((BUDGET - ($(date +%s) - START))); }

step() { # name cap result_file command...  (result_file: "-" when the step writes none)
    local name="$1" cap="$2" result="$3"
    shift 3
    local left
    left="$(remaining)"
    [ "$cap" -gt "$((left - 15))" ] && cap=$((left - 15))
    if [ "$cap" -lt 10 ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "-1" "0" "$*" "$result" "skipped" \
            >>"$WORK/steps.tsv"
        echo "== $name: skipped (budget spent)" | tee -a "$LOG"
        return
    fi
    echo "== $name (cap ${cap} s): $*" | tee -a "$LOG"
    local t0 t1 rc
    t0="$(date +%s.%N)"
    timeout --signal=INT --kill-after=20 "$cap" "$@" >"$WORK/$name.out" 2>&1
    rc=$?
    t1="$(date +%s.%N)"
    cat "$WORK/$name.out" >>"$LOG"
    local status=ok
    [ "$rc" -ne 0 ] && status=failed
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && status=timeout
    local wall
    wall="$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$wall" "$*" "$result" "$status" \
        >>"$WORK/steps.tsv"
    echo "== $name: $status (exit $rc) after $wall s" | tee -a "$LOG"
}

step bench_analyze 120 "$WORK/analyze.json" "$PYTHON" benchmarks/bench_analyze.py \
    --device cuda --threads "$THREADS" --repeats 3 --skip-naive --skip-jit \
    --json "$WORK/analyze.json"
step bench_probe 90 - "$PYTHON" benchmarks/bench_probe.py --device cuda --threads "$THREADS" \
    --skip-sklearn
step bench_sweep 60 "$WORK/sweep.json" "$PYTHON" benchmarks/bench_sweep.py --limit 12 \
    --skip-ray --cores 16 --workers 4 --set 'device="cuda"' --json "$WORK/sweep.json"
step bench_train 60 "$WORK/train.jsonl" "$PYTHON" benchmarks/bench_train.py \
    --threads "$THREADS" --set device=cuda --json "$WORK/train.jsonl"
step bench_coverage 45 - "$PYTHON" benchmarks/bench_coverage.py --quick
step theory_breakdown 45 "$WORK/theory_breakdown.json" "$PYTHON" benchmarks/theory_breakdown.py \
    --device cuda --steps 300 --json "$WORK/theory_breakdown.json"
step theory_width 45 "$WORK/theory_width.json" "$PYTHON" benchmarks/theory_width.py \
    --device cuda --widths 64,256,1024 --seeds 2 --json "$WORK/theory_width.json"
for script in benchmarks/*.py; do
    base="$(basename "$script" .py)"
    case "$base" in
    _* | bench_analyze | bench_probe | bench_sweep | bench_train | bench_coverage) continue ;;
    theory_breakdown | theory_width | bench_reproduce) continue ;;
    esac
    step "$base" 45 - "$PYTHON" "$script"
done
step reproduce_full 100000 "$WORK/reproduce.json" "$PYTHON" benchmarks/bench_reproduce.py \
    --profile full --device cuda --out "$WORK/reproduce" --json "$WORK/reproduce.json"

# ---- one JSON ----------------------------------------------------------------------------------
"$PYTHON" - "$WORK" "$RESULTS" "$BUDGET" "$START" <<'EOF'
import json, os, sys, time

work, results, budget, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def load(path):
    if path == "-" or not os.path.exists(path):
        return None
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # JSON lines
        return [json.loads(line) for line in text.splitlines() if line.strip()]


steps = []
for line in open(os.path.join(work, "steps.tsv")):
    name, rc, wall, command, result, status = line.rstrip("\n").split("\t")
    out = os.path.join(work, f"{name}.out")
    tail = open(out, errors="replace").read()[-6000:] if os.path.exists(out) else ""
    steps.append({"name": name, "status": status, "exit_status": int(rc),
                  "wall_s": round(float(wall), 2), "command": command,
                  "result": load(result), "output_tail": tail})
reproduce = os.path.join(work, "reproduce", "parts")
if os.path.isdir(reproduce):
    for step in steps:
        if step["name"] == "reproduce_full":
            step["parts_written"] = sorted(os.listdir(reproduce))
smi = os.path.join(work, "nvidia_smi.txt")
doc = {
    "script": "benchmarks/gpu.sh",
    "status": "ok" if all(s["status"] == "ok" for s in steps) else "incomplete",
    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "budget_s": budget,
    "total_wall_s": round(time.time() - start, 1),
    "machine": load(os.path.join(work, "machine.json")),
    "nvidia_smi": open(smi).read().strip() if os.path.exists(smi) else None,
    "steps": steps,
}
with open(results, "w") as handle:
    json.dump(doc, handle, indent=2)
print(f"gpu.sh: {doc['status']}; {len(steps)} steps in {doc['total_wall_s']} s -> {results}")
for s in steps:
    print(f"  {s['name']:<16} {s['status']:<8} {s['wall_s']:>8.1f} s")
sys.exit(0 if doc["status"] == "ok" else 1)
EOF
rc=$?
rm -rf "$WORK"
exit $rc
