#!/bin/bash
# Planner checks on ResNet50 (issue 5), as run for docs/planner.md: one JSON line per run in
# bench/results/<date>-<host>-planner.jsonl. Runs one at a time; keep the machine otherwise idle.
#   equal:  4 equal nodes, --auto --replan (3 runs)
#   slow:   3 nodes, the second slowed 2x: --auto, against --balance-by params and --balance-by time (2 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/$(date -u +%F)-$(hostname)-planner.jsonl"
defer() { node dist/cli/defer.js "$@" --model resnet50 --frames 30 --port 0 --json --log-level warn; }
line() {
  node -e '
    const [label, file] = process.argv.slice(1);
    const s = JSON.parse(require("fs").readFileSync(file));
    const p = s.predicted, r = s.replanned;
    console.log(JSON.stringify({ label, cuts: s.cuts, fps: s.throughputFps, singleProcessFps: s.singleProcess.throughputFps, maxAbsDiffVsLocal: s.maxAbsDiffVsLocal, framesReturned: s.framesReturned,
      stages: s.stages.map((x) => ({ node: x.node, params: x.params, busyMs: x.meanBusyMs, cpuMs: x.meanCpuMs })),
      predicted: p && { fps: p.predictedThroughputFps, throughputDiffPct: p.throughputDiffPct, measuredSpreadPct: p.measuredSpreadPct, bottleneck: p.predictedBottleneck, nodes: p.nodes, stages: p.stages, relayCpuMs: p.relayCpuMs },
      replanned: r && { changed: r.changed, cuts: r.summary.cuts, fps: r.summary.throughputFps, predictedFps: r.summary.predicted.predictedThroughputFps, throughputDiffPct: r.summary.predicted.throughputDiffPct, measuredSpreadPct: r.summary.predicted.measuredSpreadPct } }));
  ' "$1" "$2" | tee -a "$out"
}
tmp=$(mktemp)
for i in 1 2 3; do defer up --auto --replan --nodes 4 > "$tmp"; line "equal4-auto-$i" "$tmp"; done
for i in 1 2; do
  defer up --auto --nodes 3 --slowdown 1,2,1 > "$tmp"; line "slow121-auto-$i" "$tmp"
  defer up --balance-by params --nodes 3 --slowdown 1,2,1 > "$tmp"; line "slow121-params-$i" "$tmp"
  defer up --balance-by time --nodes 3 --slowdown 1,2,1 > "$tmp"; line "slow121-time-$i" "$tmp"
done
rm -f "$tmp"
echo "wrote $out" >&2
