#!/usr/bin/env bash
# On the lent device machine: unpack the node binary and the bundle that scripts/device-bundle.sh made (carried in
# DIR), put node on PATH, write OUT/machine.txt, then run COMMANDS (a shell string, e.g. one or more bench runs
# each under its own `timeout`, writing into OUT). Charts are removed from OUT at the end: only 8 files come back
# (make them here from the JSON with `node dist/bench/run.js --report FILES`).
# usage: bash scripts/device-run.sh DIR OUT 'COMMANDS'
set -u
DIR=$1 OUT=$2 COMMANDS=$3
cd "$(dirname "$0")/.."
mkdir -p /tmp/device-node "$OUT"
python3 - "$DIR" <<'PY'
import lzma, os, shutil, sys, tarfile
d = sys.argv[1]
with lzma.open(os.path.join(d, 'node.xz')) as s, open('/tmp/device-node/node', 'wb') as o:
    shutil.copyfileobj(s, o)
os.chmod('/tmp/device-node/node', 0o755)
with tarfile.open(os.path.join(d, 'bundle.tar.xz'), 'r:xz') as t:
    t.extractall('.')
PY
export PATH=/tmp/device-node:$PATH
{ date; nproc; grep -m1 'model name' /proc/cpuinfo; free -g | head -2; node --version; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
OUT=$OUT bash -c "$COMMANDS"
rc=$?
pkill -9 -f 'dist/cli/defer.js' 2>/dev/null
rm -f "$OUT"/*.png
ls -la "$OUT"
exit $rc
