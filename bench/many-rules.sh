#!/usr/bin/env bash
# Many rules: a daemon with RULES (500) rules on a PostgreSQL shop of N (1,000,000) orders and a
# PostgreSQL state store, for DURATION (600) seconds after a WARMUP (60 s). Rule 1 reads every
# order and finds OPEN (100,000) of them broken (every 5 minutes); each other rule reads its
# own slice of N / RULES orders by primary key, one in a hundred broken, every 10 s, 30 s, 1 min,
# 2 min or 5 min in turn. It prints:
#   - the run lag, p50 and p99: how much later than its schedule a rule's run started (the gap
#     between a rule's consecutive runs less its interval), over the measured window;
#   - the daemon's CPU per rule run, and its RSS (now and peak);
#   - the state store's growth per hour (pg_database_size over the window);
#   - GET /metrics, /api/v1/violations (a page), /ui/content (the page) and /ui/rules/rule_1
#     (the rule with 100,000 open), each timed SAMPLES (20) times: median and slowest.
# It fails unless every rule ran and the OPEN violations are open. Targets (issue 23): lag p99
# <= 1 s, /metrics <= 50 ms, the page <= 300 ms.
#
#   bench/many-rules.sh
#   DURATION=120 WARMUP=30 bench/many-rules.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=${RULES:-500}
N=${N:-1000000}
OPEN=${OPEN:-100000}
DURATION=${DURATION:-600}
WARMUP=${WARMUP:-60}
SAMPLES=${SAMPLES:-20}
STATE=invariantd_bench_many_state
SHOP=invariantd_bench_many_shop
. bench/lib.sh
trap 'bench_cleanup; psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $SHOP" >/dev/null 2>&1 || true' EXIT
fresh_state
psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $SHOP" -c "CREATE DATABASE $SHOP" >/dev/null
# Orders 1..N; every (N / OPEN)-th is broken for rule 1 (not reserved), and one in a hundred of
# each slice for the others (not shipped).
psql "$PG/$SHOP" -qX >/dev/null <<SQL
CREATE TABLE orders (id BIGINT PRIMARY KEY, reserved BOOLEAN NOT NULL, shipped BOOLEAN NOT NULL, amount NUMERIC(12, 2) NOT NULL);
INSERT INTO orders SELECT i, i % ($N / $OPEN) <> 0, i % 100 <> 7, (i % 500) + 0.99 FROM generate_series(1, $N) i;
ANALYZE orders;
SQL

port=$(free_port)
mkdir -p "$work/rules"
cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "$PG/$SHOP", max_connections: 8 }
state: { url: "$PG/$STATE" }
rules: [rules/]
max_concurrent_runs: 8
http: { listen: "127.0.0.1:$port" }
YAML
cat > "$work/rules/rule_1.yaml" <<YAML
name: rule_1
every: 5m
key: id
datasets:
  o: { source: shop, query: "SELECT id, reserved, amount FROM orders" }
assert: o.reserved
message: "order {{key}} is not reserved"
impact: { value: o.amount, unit: eur }
YAML
intervals=(10s 30s 1m 2m 5m)
slice=$(( N / RULES ))
for i in $(seq 2 "$RULES"); do
    from=$(( (i - 1) * slice + 1 )); to=$(( i * slice ))
    cat >> "$work/rules/slices.yaml" <<YAML
---
name: rule_$i
every: ${intervals[$(( i % 5 ))]}
key: id
datasets:
  o: { source: shop, query: "SELECT id, shipped, amount FROM orders WHERE id BETWEEN $from AND $to" }
assert: o.shipped
message: "order {{key}} is not shipped"
impact: { value: o.amount, unit: eur }
YAML
done

daemon
q() { psql "$PG/$STATE" -qXAt -c "$1" 2>/dev/null || echo 0; }
deadline=$(( SECONDS + WARMUP + 600 ))
until [ "$(q "SELECT count(DISTINCT rule) FROM runs WHERE outcome <> 'unknown'")" -ge "$RULES" ] \
    && [ "$(q "SELECT count(*) FROM violations WHERE rule = 'rule_1' AND state = 'open'")" -ge "$OPEN" ]; do
    [ $SECONDS -gt $deadline ] && { echo "FAIL: not every rule ran, or rule_1's violations did not open" >&2; exit 1; }
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: the daemon stopped" >&2; pid=; exit 1; }
    sleep 2
done
sleep "$WARMUP"

cpu() { awk -v c="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / c}' "/proc/$pid/stat"; }
size() { q "SELECT pg_database_size('$STATE')"; }
t0=$(q "SELECT CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)")
c0=$(cpu); s0=$(size); r0=$(q "SELECT count(*) FROM runs")
sleep "$DURATION"
t1=$(q "SELECT CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)")
c1=$(cpu); s1=$(size); r1=$(q "SELECT count(*) FROM runs")
rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status")
hwm=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$pid/status")

# Lag: each gap between a rule's consecutive runs in the window, less the rule's interval.
q "SELECT rule, started_us FROM runs WHERE started_us BETWEEN $t0 AND $t1 ORDER BY rule, started_us" \
    | python3 -c '
import sys
every = {"rule_1": 300}
seconds = {"10s": 10, "30s": 30, "1m": 60, "2m": 120, "5m": 300}
names = sys.argv[1].split()
for i in range(2, int(sys.argv[2]) + 1):
    every["rule_%d" % i] = seconds[names[i % 5]]
last, lags = {}, []
for line in sys.stdin:
    rule, us = line.strip().split("|")
    us = int(us)
    if rule in last:
        lags.append(max(0.0, (us - last[rule]) / 1e6 - every[rule]))
    last[rule] = us
lags.sort()
pick = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))] if lags else 0.0
print("run lag: p50 %.3f s, p99 %.3f s, max %.3f s (%d gaps)" % (pick(0.5), pick(0.99), lags[-1] if lags else 0.0, len(lags)))
' "${intervals[*]}" "$RULES"
runs=$(( r1 - r0 ))
echo "runs in ${DURATION}s: $runs; daemon CPU per rule run: $(echo "scale=2; ($c1 - $c0) * 1000 / $runs" | bc) ms"
echo "RSS: $(( rss / 1024 )) MiB now, $(( hwm / 1024 )) MiB peak"
echo "state store: $(( s1 / 1048576 )) MiB, growing $(echo "scale=1; ($s1 - $s0) * 3600 / $DURATION / 1048576" | bc) MiB an hour"
echo "open violations: $(q "SELECT count(*) FROM violations WHERE state = 'open'")"
for path in /metrics "/api/v1/violations?limit=100" /ui/content /ui/rules/rule_1; do
    for _ in $(seq 1 "$SAMPLES"); do
        curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$path" || echo 999
    done | sort -n | awk -v p="$path" '
        { t[NR] = $1 * 1000 }
        END { printf "GET %s: median %.1f ms, slowest %.1f ms\n", p, t[int(NR / 2) + 1], t[NR] }'
done
