#!/usr/bin/env bash
# /metrics at scale: the daemon with 100 rules and 10,000 open violations (100 per rule, on
# SQLite), then SCRAPES sequential scrapes of /metrics timed by curl: the median and the
# slowest must stay under 10 ms. The response's size and series count are printed too.
#
#   bench/metrics-scrape.sh                  # 100 rules x 100 violations, 500 scrapes
#   RULES=200 PER_RULE=500 bench/metrics-scrape.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=${RULES:-100}
PER_RULE=${PER_RULE:-100}
SCRAPES=${SCRAPES:-500}

cargo build --release --quiet
BIN=$PWD/target/release/invariantd
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

total=$((RULES * PER_RULE))
python3 - "$work" "$total" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER, amount INTEGER)")
c.executemany("INSERT INTO t VALUES (?, 0, ?)", [(i, i % 1000) for i in range(1, int(sys.argv[2]) + 1)])
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
metrics: { rule_labels: [team] }
http: { listen: "127.0.0.1:$port" }
YAML
for i in $(seq 1 "$RULES"); do
    cat >> "$work/rules/rules.yaml" <<YAML
---
name: rule_$i
labels: { team: team_$((i % 7)) }
every: 1h
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, amount FROM t WHERE id % $RULES = $((i % RULES))" }
assert: t.ok == 1
message: "{{key}} holds {{t.amount}}"
impact: { value: t.amount, unit: cents }
YAML
done

(cd "$work" && exec "$BIN" run --log-level error) &
pid=$!

# Every rule runs once within its start jitter (at most 10 s for an hourly rule).
open=0
for _ in $(seq 1 120); do
    sleep 1
    open=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^invariantd_violations_open\{/ {s += $2} END {print s + 0}')
    [ "$open" -ge "$total" ] && break
done
if [ "$open" -lt "$total" ]; then
    echo "error: only $open of $total violations opened" >&2
    exit 1
fi

body=$(curl -s "http://127.0.0.1:$port/metrics")
echo "rules: $RULES, open violations: $open"
echo "response: $(printf '%s' "$body" | wc -c) bytes, $(printf '%s\n' "$body" | grep -vc '^#') series"
for _ in $(seq 1 "$SCRAPES"); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics"
done | sort -n | awk '
    { t[NR] = $1 * 1000 }
    END {
        printf "scrapes: %d, median %.2f ms, p99 %.2f ms, slowest %.2f ms\n", NR, t[int(NR / 2) + 1], t[int(NR * 0.99)], t[NR]
        if (t[NR] >= 10) { print "FAIL: a scrape took 10 ms or more"; exit 1 }
    }'
