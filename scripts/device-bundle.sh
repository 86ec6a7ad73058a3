#!/usr/bin/env bash
# Packs what a run on the lent 16-core device machine needs: it has no Node.js and reaches no registry. Writes
# DIR/node.xz (this node binary, xz-compressed) and DIR/bundle.tar.xz (dist/ and the files of node_modules that a
# short pipeline bench run opens, traced with strace: about 8 MB). Carry DIR on the call and start its command with
# scripts/device-run.sh, which unpacks both there. DIR should be git-ignored (the default, .devrun, is listed in
# .git/info/exclude by this script). Needs strace and xz. See docs/benchmarks.md ("On 16 cores").
# usage: bash scripts/device-bundle.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.devrun}
command -v strace >/dev/null || { echo "device-bundle: strace is needed (apt-get install strace)" >&2; exit 1; }
case $DIR in /*) ;; *) grep -qxF "/$DIR/" .git/info/exclude 2>/dev/null || echo "/$DIR/" >> .git/info/exclude ;; esac
mkdir -p "$DIR"
npm run build --silent
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "device-bundle: tracing the files a bench run opens (the three models on 2 nodes, a few minutes)" >&2
HOME="$TMP/home" strace -f -qq -e trace=openat -e status=successful -o "$TMP/trace" \
  node dist/bench/run.js --full --only pipeline --models tm-aircraft,mobilenet,resnet50 --nodes 2 --no-redeploy --out "$TMP/out" --host trace >/dev/null
grep -o "\"$PWD/node_modules/[^\"]*\"" "$TMP/trace" | tr -d '"' | xargs realpath -s -m --relative-to="$PWD" | sort -u |
  while read -r f; do [ -f "$f" ] && echo "$f"; done > "$TMP/files"
find dist -type f ! -name '*.map' >> "$TMP/files"
tar cJf "$DIR/bundle.tar.xz" -T "$TMP/files"
xz -T0 -6 -c "$(command -v node)" > "$DIR/node.xz"
echo "device-bundle: $DIR/bundle.tar.xz ($(du -h "$DIR/bundle.tar.xz" | cut -f1), $(wc -l < "$TMP/files") files), $DIR/node.xz ($(du -h "$DIR/node.xz" | cut -f1), $(node --version))" >&2
