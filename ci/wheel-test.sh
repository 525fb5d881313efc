#!/usr/bin/env bash
# The install path a Python CI job takes, end to end: build the ptp-agent
# wheel (debug profile: it reuses `cargo build --workspace --bins`), install
# it with one `pip install` into a fresh venv, check `ptp-agent --version`,
# then run a real pytest suite through that agent into a real nats-server and
# ptp-master on free ports and wait until the master lists the run.
# scripts/test runs this after building; it needs NATS_SERVER_BIN and
# PTP_PYTHON (a Python with pytest), which scripts/test sets.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '\033[1mci/wheel-test:\033[0m %s\n' "$*" >&2; }
: "${NATS_SERVER_BIN:?set NATS_SERVER_BIN (scripts/test does)}"
: "${PTP_PYTHON:?set PTP_PYTHON to a Python with pytest (scripts/test does)}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { log "FAILED: $*"; for f in "$tmp"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; } >&2; done; exit 1; }

wheel=$(scripts/wheel --dev --out "$tmp/wheels" 2>"$tmp/wheel.log") || fail "the wheel did not build"
log "built $(basename "$wheel")"
[[ "$(basename "$wheel")" == *manylinux* ]] || fail "the wheel is not tagged manylinux: $wheel"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check --no-index "$wheel" || fail "pip install of the wheel"
version=$("$tmp/venv/bin/ptp-agent" --version) || fail "ptp-agent --version"
[[ "$version" == "ptp-agent "* ]] || fail "unexpected version line: $version"
log "installed into a fresh venv: $version"

free_port() { "$PTP_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=$(free_port)
"$NATS_SERVER_BIN" -a 127.0.0.1 -p "$nats_port" -js -sd "$tmp/nats" >"$tmp/nats.log" 2>&1 &
pids+=($!)
http_port=$(free_port)
NATS_URL="nats://127.0.0.1:$nats_port" PTP_LISTEN="127.0.0.1:$http_port" PTP_DB="$tmp/ptp.sqlite" \
  RUST_LOG=warn "$root/target/debug/ptp-master" >"$tmp/master.log" 2>&1 &
pids+=($!)
get() { "$PTP_PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null; }
for _ in $(seq 300); do get "http://127.0.0.1:$http_port/health" >/dev/null && break; sleep 0.1; done
get "http://127.0.0.1:$http_port/health" >/dev/null || fail "the master did not become healthy"

mkdir -p "$tmp/project"
cp api/tests/fixtures/pytest_suite/test_outcomes.py "$tmp/project/"
set +e
(cd "$tmp/project" && NATS_URL="nats://127.0.0.1:$nats_port" PROJECT=wheel-smoke BRANCH=main COMMIT=w1 \
  PTP_SPOOL_DIR="$tmp/spool" PTP_PUBLISH_TIMEOUT=20 \
  "$tmp/venv/bin/ptp-agent" run -- "$PTP_PYTHON" -m pytest -q -p no:cacheprovider >"$tmp/agent.log" 2>&1)
code=$?
set -e
[ "$code" = 1 ] || fail "the suite has failing tests, so the agent should exit 1, not $code"
grep -q "published run" "$tmp/agent.log" || fail "the agent did not publish"
for _ in $(seq 300); do
  runs=$(get "http://127.0.0.1:$http_port/results?project=wheel-smoke" || true)
  [[ "$runs" == *'"project":"wheel-smoke"'* ]] && break
  sleep 0.1
done
[[ "$runs" == *'"project":"wheel-smoke"'* ]] || fail "the master does not list the run: $runs"
log "ok: the wheel's ptp-agent ran pytest and the master lists the run"
