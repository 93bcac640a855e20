#!/usr/bin/env bash
# Every variant study of the anytime policy (benchmarks/anytime_variants.py), one after the other, on
# the preset's parameters of the day it runs: what results/<preset>/benchmarks/anytime_variants/ holds.
#
#   bash benchmarks/anytime_studies.sh          # preset full, both tasks (60 min on 2 cores, 2026-12-08)
#   ONLY="late_target geometric_reference" bash benchmarks/anytime_studies.sh   # some studies only
#
# Why a script: each study compares variants with the preset as it is when the study runs, so after a
# change of the method, of the preset or of the development harness (on 2026-12-08 every development
# cell moved to the evaluation's arrival rate) every study is re-run, the same way. The preset's runs
# of the first study are copied into each other folder before it runs, and a variant two studies share
# is copied too: benchmarks/anytime_variants.py reuses a file with the same seeds, parameters, examples
# and rates (planner.analysis.tuning.reusable_runs), so nothing runs twice. Each (task, variant) is
# written when it finishes, so a killed run resumes at the next one. FRESH=1 first removes every
# study's runs (a changed preset or harness makes them old; reusable_runs would refuse them anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-full}
PY=${PY:-.venv/bin/python}
ROOT=results/$PRESET/benchmarks/anytime_variants
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ONLY=${ONLY:-}

run() {
  local study=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $study "* ]]; then return; fi
  mkdir -p "$ROOT/$study"
  if [ "$study" != late_step ]; then
    for t in cifar10 sst2; do
      if [ -f "$ROOT/late_step/${t}_preset.csv" ]; then cp "$ROOT/late_step/${t}_preset.csv" "$ROOT/$study/"; fi
    done
  fi
  echo "=== $study $(date -u +%FT%TZ)"
  "$PY" benchmarks/anytime_variants.py --preset "$PRESET" --out --study "$study" --jobs 2 "$@"
}

if [ "${FRESH:-0}" = 1 ]; then rm -f "$ROOT"/*/*.csv; fi

# the late controller's step, the member cut-off's starting quantile and the late-share target
run late_step --reference preset --variant step03='{"late_step": 0.03}' --variant start08='{"member_quantile": 0.8}' \
  --variant target07='{"late_target": 0.007}' --variant step02start08='{"late_step": 0.02, "member_quantile": 0.8}'
# the late-share target (chosen on 2026-12-02 on the evaluation's own grid) against others
mkdir -p "$ROOT/late_target"
for t in cifar10 sst2; do
  if [ -f "$ROOT/late_step/${t}_target07.csv" ]; then cp "$ROOT/late_step/${t}_target07.csv" "$ROOT/late_target/"; fi
done
run late_target --reference preset --variant target05='{"late_target": 0.005}' --variant target07='{"late_target": 0.007}' \
  --variant target08='{"late_target": 0.008}' --variant target095='{"late_target": 0.0095}'
# a shed request valued as taking no server time, against holding its place (the rule before 2026-12-07)
run shed_frees_time --reference before --variant before='{"shed_frees_time": false}'
# observed service times compared with the profile's geometric mean instead of its median
run geometric_reference --reference preset --variant geometric='{"geometric_reference": true}'
# the member cut-off of one-request calls the server can stop, at their own quantile (none: the steered one)
run stoppable_quantile --reference preset --variant none='{"stoppable_quantile": null}' \
  --variant stop05='{"stoppable_quantile": 0.05}' --variant stop25='{"stoppable_quantile": 0.25}' \
  --variant stop65='{"stoppable_quantile": 0.65}'
# padding the window with the expected arrivals, against none
run expected_arrivals --reference preset --variant off='{"expected_arrivals": false, "arrival_model": "poisson"}'
# the expected arrivals from the trace's own observed gaps, against a Poisson process at the observed rate
run arrival_model --reference poisson --variant poisson='{"arrival_model": "poisson"}'
# the expected arrivals spread as a Poisson process's arrival times, against evenly spaced ones
run arrival_spread --reference spaced --variant spaced='{"arrival_spread": false}'
# the accuracy tolerance (0.02 since 2026-12-05) against the one before (0.002) and others
run accuracy_tolerance --reference previous --variant previous='{"accuracy_tolerance": 0.002}' \
  --variant tol005='{"accuracy_tolerance": 0.005}' --variant tol01='{"accuracy_tolerance": 0.01}' \
  --variant tol015='{"accuracy_tolerance": 0.015}' --variant tol03='{"accuracy_tolerance": 0.03}'
echo "=== done $(date -u +%FT%TZ)"
