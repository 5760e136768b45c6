#!/usr/bin/env bash
# Renders an HTML report in Debian's headless chromium and saves a PNG screenshot, to look
# at what a browser shows (no server: the report is one self-contained file).
# Usage: scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Needs: apt-get install -y chromium
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
    exit 2
fi
report=$(realpath "$1")
output=$(realpath -m "$2")
size=${3:-1200,1600}
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    echo "$0: chromium not found; install it with: apt-get install -y chromium" >&2
    exit 3
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# No network, no sandbox (containers run as root), a throwaway profile.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size="$size" \
    --screenshot="$output" "file://$report" 2>/dev/null
test -s "$output"
echo "$output"
