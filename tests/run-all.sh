#!/usr/bin/env bash
# Runs every Sluice test: installs what the tests need (apt, pip, npm, cargo), builds the
# broker, then runs the unit tests of all crates and the real-client integration tests
# (pytest in tests/python, node --test in tests/js, cargo in tests/rust).
#
# Idempotent: installs are skipped when already done. Needs root (or sudo) for apt-get on
# a fresh Debian bookworm machine. Fails if any step fails; every test step still runs, and
# the summary at the end says which failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export SLUICE_BIN="${SLUICE_BIN:-$TARGET_DIR/debug/sluice}"
VENV="$ROOT/tests/.venv"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/sluice-tests.XXXXXX")"
SUITE_START=$SECONDS
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

section() { printf '\n==================== %s ====================\n' "$*"; }
elapsed() { printf '[run-all] %s took %ss\n' "$1" "$(( SECONDS - $2 ))"; }

# ---------------------------------------------------------------------------- install
section "install: Debian packages"
t=$SECONDS
apt_needed=()
command -v kcat >/dev/null 2>&1 || apt_needed+=(kcat)
command -v make >/dev/null 2>&1 || apt_needed+=(make)    # rdkafka-sys builds librdkafka
command -v cc >/dev/null 2>&1 || apt_needed+=(gcc)
command -v node >/dev/null 2>&1 || apt_needed+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_needed+=(npm)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_needed+=(python3-venv)
if [ "${#apt_needed[@]}" -gt 0 ]; then
  echo "apt-get install ${apt_needed[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_needed[@]}" >/dev/null
else
  echo "already installed: kcat, make, cc, node, npm, python3 venv"
fi
kcat -V | head -n 2 | tail -n 1
elapsed "apt" "$t"

section "install: Python venv (tests/.venv)"
t=$SECONDS
req="$ROOT/tests/python/requirements.txt"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "up to date"
else
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
"$VENV/bin/python" - <<'PY'
import aiokafka, confluent_kafka, kafka, pytest
print(f"pytest {pytest.__version__}, confluent-kafka {confluent_kafka.__version__} "
      f"(librdkafka {confluent_kafka.libversion()[0]}), kafka-python {kafka.__version__}, "
      f"aiokafka {aiokafka.__version__}")
PY
elapsed "pip" "$t"

section "install: npm ci (tests/js)"
t=$SECONDS
stamp="$ROOT/tests/js/node_modules/.package-lock.sha256"
want="$(sha256sum "$ROOT/tests/js/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "up to date"
else
  (cd "$ROOT/tests/js" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
echo "node $(node --version), kafkajs $(node -p 'require("./tests/js/node_modules/kafkajs/package.json").version')"
elapsed "npm" "$t"

# ---------------------------------------------------------------------------- build
section "build: cargo build -p sluice"
t=$SECONDS
cargo build -p sluice
test -x "$SLUICE_BIN" || { echo "no binary at $SLUICE_BIN"; exit 1; }
elapsed "build" "$t"

# ---------------------------------------------------------------------------- tests
failed=()
passed=()
# run_step NAME CMD...: runs a test step with output to the terminal and a log; keeps going.
run_step() {
  local name="$1"; shift
  section "test: $name"
  local t=$SECONDS rc=0
  "$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
  elapsed "$name" "$t"
  if [ "$rc" -eq 0 ]; then passed+=("$name"); else failed+=("$name (exit $rc)"); fi
}

run_pytest() {
  local rc=0
  timeout 2400 "$VENV/bin/python" -m pytest "$ROOT/tests/python" || rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure"; fi
  return "$rc"
}

run_node() {
  cd "$ROOT/tests/js" && timeout 600 node --test --test-reporter=tap
}

run_step "cargo-unit" timeout 1500 cargo test --workspace --exclude sluice-client-tests --no-fail-fast
run_step "pytest" run_pytest
run_step "node" run_node
# The metadata quorum's deterministic simulation (turmoil): seeded crashes, restarts and
# partitions of three voters with brokers heartbeating. Replay one seed with
# SLUICE_SIM_SEEDS=N cargo test -p sluice-raft --features sim --test sim -- --nocapture.
run_step "raft-sim" env SLUICE_SIM_SEEDS="${SLUICE_SIM_SEEDS:-1-200}" timeout 1200 cargo test -p sluice-raft --features sim --test sim
run_step "rust-clients" timeout 1200 cargo test -p sluice-client-tests --no-fail-fast

# ---------------------------------------------------------------------------- summary
# Totals over every runner, read from their own closing lines.
tests_passed=0; tests_failed=0; tests_skipped=0
add() { tests_passed=$((tests_passed + ${1:-0})); tests_failed=$((tests_failed + ${2:-0})); tests_skipped=$((tests_skipped + ${3:-0})); }
for f in "$LOGS/cargo-unit.log" "$LOGS/raft-sim.log" "$LOGS/rust-clients.log"; do
  [ -f "$f" ] || continue
  while read -r p fl ig; do add "$p" "$fl" "$ig"; done < <(
    sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$f")
done
if [ -f "$LOGS/pytest.log" ]; then
  last="$(grep -E '^=+ .* in [0-9.]+s' "$LOGS/pytest.log" | tail -n 1 || true)"
  add "$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || echo 0)" \
      "$(( $(grep -oE '[0-9]+ failed' <<<"$last" | grep -oE '[0-9]+' || echo 0) + $(grep -oE '[0-9]+ errors?' <<<"$last" | grep -oE '[0-9]+' || echo 0) ))" \
      "$(grep -oE '[0-9]+ skipped' <<<"$last" | grep -oE '[0-9]+' || echo 0)"
fi
if [ -f "$LOGS/node.log" ]; then
  add "$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$LOGS/node.log" | tail -n 1)" \
      "$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$LOGS/node.log" | tail -n 1)" \
      "$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$LOGS/node.log" | tail -n 1)"
fi

section "summary"
echo "steps passed: ${passed[*]:-none}"
echo "steps failed: ${failed[*]:-none}"
echo "logs: $LOGS; total time $(( SECONDS - SUITE_START ))s"
if [ "${#failed[@]}" -gt 0 ] && [ "$tests_failed" -eq 0 ]; then
  tests_failed=1  # a step failed without a test failing (build error, no tests, timeout)
fi
echo "all: $tests_passed passed, $tests_failed failed, $tests_skipped skipped"
[ "${#failed[@]}" -eq 0 ]
