#!/usr/bin/env bash
# Steady-state benchmark: the daemon with 100 rules, each running every second on small SQLite
# datasets (a few violations each), for DURATION seconds. Samples resident memory and CPU time
# every SAMPLE seconds: both must stay flat (no per-run growth).
#
#   bench/idle-daemon.sh                 # 100 rules, 120 s
#   RULES=100 DURATION=3600 bench/idle-daemon.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=${RULES:-100}
DURATION=${DURATION:-120}
SAMPLE=${SAMPLE:-10}

cargo build --release --quiet
BIN=$PWD/target/release/invariantd
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$work" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER, note TEXT)")
c.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, 0 if i % 50 == 0 else 1, "n%d" % i) for i in range(1, 1001)])
c.commit()
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$work/rules"
cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db", max_connections: 8 }
state: { url: "sqlite://state.db" }
rules: [rules/]
max_concurrent_runs: 8
http: { listen: "127.0.0.1:$port" }
YAML
for i in $(seq 1 "$RULES"); do
    cat >> "$work/rules/rules.yaml" <<YAML
---
name: rule_$i
every: 1s
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, note FROM t WHERE id % $RULES = $((i % RULES))" }
assert: t.ok == 1
message: "{{key}} {{t.note}}"
YAML
done

(cd "$work" && exec "$BIN" run --log-level error) &
pid=$!
sleep 5

clk=$(getconf CLK_TCK)
printf '%6s  %10s  %12s  %10s\n' "time" "rss (KiB)" "cpu (s)" "runs"
samples=()
for t in $(seq "$SAMPLE" "$SAMPLE" "$DURATION"); do
    sleep "$SAMPLE"
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    cpu=$(awk -v c="$clk" '{printf "%.1f", ($14 + $15) / c}' "/proc/$pid/stat")
    runs=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^invariantd_rule_runs_total/ {s += $2} END {print s}')
    printf '%6s  %10s  %12s  %10s\n' "${t}s" "$rss" "$cpu" "$runs"
    samples+=("$rss")
done
echo "rss first sample ${samples[0]} KiB, last ${samples[-1]} KiB"
