#!/bin/bash
# The broker's and dispatcher's CPU per frame (docs/planner.md, planner.relayMsPerMB and relayMsPerMessage): defer up
# on models from light to heavy, as one stage and as chains, one JSON line per run in
# bench/results/<date>-<host>-relay.jsonl with the measured dispatcherCpuMsPerFrame, the MB and messages per frame,
# and what the planner's constants (DEFER_PLANNER_RELAY_MS_PER_MB / _PER_MESSAGE, else the defaults 8 and 0.4) give.
# Runs one at a time; keep the machine otherwise idle. About 5 minutes on the 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/$(date -u +%F)-$(hostname)-relay.jsonl"
perMB=${DEFER_PLANNER_RELAY_MS_PER_MB:-8}
perMessage=${DEFER_PLANNER_RELAY_MS_PER_MESSAGE:-0.4}
tmp=$(mktemp)
run() {
  local label=$1
  shift
  node dist/cli/defer.js up "$@" --port 0 --json --log-level warn > "$tmp"
  node -e '
    const [label, file, perMB, perMessage] = process.argv.slice(1);
    const s = JSON.parse(require("fs").readFileSync(file, "utf8").trim().split("\n").at(-1));
    const mb = s.bytesPerFramePerHop.reduce((a, h) => a + h.bytes, 0) / 1e6;
    const messages = s.bytesPerFramePerHop.length;
    const predicted = mb * Number(perMB) + messages * Number(perMessage);
    console.log(JSON.stringify({ label, shape: s.shape, frames: s.frames, fps: s.throughputFps, mbPerFrame: +mb.toFixed(4), messages,
      measuredCpuMs: s.dispatcherCpuMsPerFrame, predictedCpuMs: +predicted.toFixed(2), predictedOverMeasured: +(predicted / s.dispatcherCpuMsPerFrame).toFixed(2) }));
  ' "$label" "$tmp" "$perMB" "$perMessage" | tee -a "$out"
}
tm=test/fixtures/models/tm-aircraft
run tiny-1 --model tiny --nodes 1 --frames 400
run tiny-chain3 --model tiny --nodes 3 --shape chain --frames 400
run tm-1 --model "$tm" --nodes 1 --frames 200
run tm-chain2 --model "$tm" --nodes 2 --shape chain --frames 200
run tm-chain3 --model "$tm" --nodes 3 --shape chain --frames 150
run mobilenet-1 --model mobilenet --nodes 1 --frames 100
run mobilenet-chain2 --model mobilenet --nodes 2 --shape chain --frames 100
run mobilenet-chain3 --model mobilenet --nodes 3 --shape chain --frames 100
run resnet50-chain2 --model resnet50 --nodes 2 --shape chain --frames 30
run resnet50-chain4 --model resnet50 --nodes 4 --shape chain --frames 30
rm -f "$tmp"
echo "wrote $out" >&2
