#!/usr/bin/env bash
# Redraw the Node-RED pictures of docs/node-red.md (docs/images/node-red-*.png) from the editor test: a throwaway
# Node-RED with this package installed, each example imported through Import > Examples and deployed in headless
# Chromium, and the port-taken case (test/integration/node-red-editor.test.ts).
# Needs: npm run build; apt-get install -y chromium mosquitto mosquitto-clients.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
DEFER_SCREENSHOTS="$root/docs/images" node --test --test-timeout=600000 dist/test/integration/node-red-editor.test.js
ls -1 docs/images/node-red-*.png
