#!/usr/bin/env bash
# Redraw docs/images/node-red-example.png: a throwaway Node-RED with this package installed, the example
# flow deployed (its MQTT on port 18883), a few JPEG frames sent, and headless Chromium's view of the editor.
# Needs: npm run build; apt-get install -y chromium mosquitto-clients.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'kill "$red" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
echo '{"name":"node-red-project","private":true}' > package.json
npm install "$root" --no-audit --no-fund --offline --ignore-scripts >/dev/null
cat > settings.js <<'JS'
module.exports = { flowFile: 'flows.json', telemetry: { enabled: false }, diagnostics: { enabled: false },
  editorTheme: { tours: false, palette: { categories: ['DEFER', 'network', 'common', 'function'] } } };
JS
node "$root/node_modules/node-red/red.js" --userDir "$dir" --port 18880 >"$dir/red.log" 2>&1 &
red=$!
until curl -sf http://127.0.0.1:18880/settings >/dev/null; do sleep 0.5; done
node -e '
  const flow = require(process.argv[1]);
  for (const n of flow) if (n.type === "defer-broker" || n.type === "mqtt-broker") n.port = "18883";
  fetch("http://127.0.0.1:18880/flows", { method: "POST", headers: { "Content-Type": "application/json", "Node-RED-Deployment-Type": "full" }, body: JSON.stringify(flow) })
    .then((r) => { if (r.status !== 204) throw new Error("deploy: " + r.status); });
' "$root/examples/DEFER - camera frames to predictions.json"
sleep 12
node -e 'require("sharp")({ create: { width: 64, height: 48, channels: 3, background: { r: 200, g: 100, b: 50 } } }).jpeg().toFile(process.argv[1])' "$dir/photo.jpg"
for i in 1 2 3 4 5 6; do mosquitto_pub -h 127.0.0.1 -p 18883 -t cameras/cam1/image -f "$dir/photo.jpg"; sleep 0.3; done
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,640 --virtual-time-budget=15000 \
  --screenshot="$root/docs/images/node-red-example.png" "http://127.0.0.1:18880/#flow/d3f3a0000000001" >/dev/null 2>&1
echo "wrote docs/images/node-red-example.png"
