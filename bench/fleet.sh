#!/bin/bash
# DEFER's evaluation on emulated devices (docs/fleets.md): every node a device of its own, a cgroup of
# DEFER_FLEET_CPUS cores (default 0.2); each model on 1, 2, 4 and 8 equal devices, as a chain and as the planner's
# shape. One JSON line per run in bench/results/<date>-<host>-fleet.jsonl: throughput and its ratio to one device,
# predicted throughput, each device's CPU ms per frame (the proxy here for DEFER's energy per device) and its ratio
# to one device's, payload bytes per frame, deployment time, node-failed events, exactness. Root needed (cgroups).
# Runs one at a time; keep the machine otherwise idle. DEFER_FLEET_MODELS (default "resnet50 aircraft mnist"),
# DEFER_FLEET_NODES (default "1 2 4 8"). ResNet50 at 0.2 cores takes about 2.4 s a frame on one device: about
# 25 minutes for the whole set on the 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/$(date -u +%F)-$(hostname)-fleet.jsonl"
cpus=${DEFER_FLEET_CPUS:-0.2}
models=${DEFER_FLEET_MODELS:-"resnet50 aircraft mnist"}
counts=${DEFER_FLEET_NODES:-"1 2 4 8"}
tmp=$(mktemp)
err=$(mktemp)
for model in $models; do
  case $model in resnet50) frames=30 ;; aircraft) frames=100 ;; *) frames=200 ;; esac
  one=""
  for n in $counts; do
    for shape in planned chain; do
      [ "$n" = 1 ] && [ "$shape" = chain ] && continue
      extra=()
      [ "$shape" = chain ] && extra=(--shape chain)
      node dist/cli/defer.js up --model "$model" --nodes "$n" --node-cpus "$cpus" "${extra[@]}" --frames "$frames" --port 0 --json --log-level warn > "$tmp" 2> "$err"
      line=$(node -e '
        const [model, n, shape, cpus, file, errFile, one] = process.argv.slice(1);
        const fs = require("fs");
        const s = JSON.parse(fs.readFileSync(file, "utf8").trim().split("\n").at(-1));
        const failed = fs.readFileSync(errFile, "utf8").split("\n").filter((l) => l.startsWith("{") && JSON.parse(l).type === "node-failed").length;
        const cpu = s.stages.flatMap((st) => st.nodes.map((x) => ({ node: x.node, ms: st.meanCpuMs, frames: x.frames })));
        const base = one ? JSON.parse(one) : null;
        const maxCpu = Math.max(...s.stages.map((st) => st.meanCpuMs ?? 0));
        console.log(JSON.stringify({ model, devices: +n, cpus: +cpus, shape: s.shape, kind: shape, frames: s.frames, fps: s.throughputFps,
          predictedFps: s.plannedShape?.predictedThroughputFps ?? null,
          vsOneDevice: base ? +(s.throughputFps / base.fps).toFixed(2) : 1,
          cpuMsPerFramePerDevice: s.stages.map((st) => st.meanCpuMs),
          maxDeviceCpuVsOneDevice: base ? +(maxCpu / base.cpu).toFixed(2) : 1,
          payloadBytesPerFrame: s.bytesPerFramePerHop.reduce((a, h) => a + h.bytes, 0),
          deployMs: s.deployMs, nodeFailed: failed, exact: s.maxAbsDiffVsLocal === 0, returned: s.framesReturned }));
      ' "$model" "$n" "$shape" "$cpus" "$tmp" "$err" "$one")
      echo "$line" | tee -a "$out"
      if [ "$n" = 1 ]; then one=$(echo "$line" | node -e 'const l = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(JSON.stringify({ fps: l.fps, cpu: Math.max(...l.cpuMsPerFramePerDevice) }))'); fi
    done
  done
done
rm -f "$tmp" "$err"
echo "wrote $out" >&2
