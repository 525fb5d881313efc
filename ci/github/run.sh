#!/usr/bin/env bash
# The steps of action.yml, in a script so a test can run them with GitHub's
# environment variables set (worker-agent/tests/agent/scripts.rs).
# Inputs arrive as PTP_INPUT_*; secrets are already in the environment.
#  1. install ptp-agent unless it is on PATH: `pip install` of this
#     checkout's worker-agent (builds the wheel with maturin), else
#     `cargo install --path`; a first build takes a few minutes;
#  2. ptp-agent run -- <command> (summary and annotations come from
#     GITHUB_STEP_SUMMARY and GITHUB_ACTIONS, which GitHub sets);
#  3. up to `retries` times, `ptp-agent flush` what could not be sent;
#  4. exit with the test command's code.
set -euo pipefail
log() { echo "ptp-action: $*" >&2; }
src=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/../.." && pwd)}

command=${PTP_INPUT_COMMAND:-}
if [ -z "${command//[[:space:]]/}" ]; then
  echo "::error title=ptp-agent::the action's 'command' input is empty: give the test command, e.g. python -m pytest -q"
  exit 2
fi
[ -n "${PTP_INPUT_NATS_URL:-}" ] && export NATS_URL=$PTP_INPUT_NATS_URL
[ -n "${PTP_INPUT_PROJECT:-}" ] && export PROJECT=$PTP_INPUT_PROJECT
case "${PTP_INPUT_SUMMARY:-true}" in
  true | yes | 1 | on) ;;
  false | no | 0 | off) export PTP_NO_SUMMARY=true ;;
  *) echo "::error title=ptp-agent::summary must be true or false, not '${PTP_INPUT_SUMMARY}'"; exit 2 ;;
esac
retries=${PTP_INPUT_RETRIES:-3}
if ! [[ "$retries" =~ ^[0-9]+$ ]]; then
  echo "::error title=ptp-agent::retries must be a whole number, not '$retries'"
  exit 2
fi

if ! command -v ptp-agent >/dev/null; then
  if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    log "installing ptp-agent: pip install $src/worker-agent (builds the wheel; minutes the first time)"
    python3 -m pip install --quiet --disable-pip-version-check "$src/worker-agent"
  elif command -v cargo >/dev/null; then
    log "installing ptp-agent: cargo install --path $src/worker-agent (minutes the first time)"
    cargo install --quiet --locked --path "$src/worker-agent"
  else
    echo "::error title=ptp-agent::ptp-agent is not on PATH and neither pip nor cargo can install it: add actions/setup-python or install the wheel first"
    exit 2
  fi
fi

# The command is split as the shell would split it (quotes honoured): it is
# the workflow author's own text, like a `run:` line.
eval "set -- $command"
set +e
ptp-agent run -- "$@"
code=$?
set -e
for ((i = 0; i < retries; i++)); do
  if ptp-agent flush --quiet; then
    break
  fi
  log "spooled runs not sent yet; trying again in 5 s ($((i + 1))/$retries)"
  sleep 5
done
exit "$code"
