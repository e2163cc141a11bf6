#!/usr/bin/env bash
# The page with many open violations, quickly: a daemon on a PostgreSQL state store (or
# SQLite: STORE=sqlite) whose rule `big` finds OPEN (100,000) rows of a SQLite shop broken
# (each with an amount, so the money at risk is summed) and whose RULES (99) other rules find
# 2,000 among them, every 5 minutes, so that nothing runs while it measures. Once every rule has run,
# it prints the median and slowest of SAMPLES (20) requests of the page (/ui/content), the
# rule's view with its history charts (/ui/rules/big) and the open violations' first page
# (/api/v1/violations): the case `many-rules.sh` measures among 500 rules running, without
# its 1M-order shop.
#
#   bench/open-page.sh
#   BIN=/path/to/older/invariantd bench/open-page.sh    # another build, the same way
#   STORE=sqlite OPEN=20000 bench/open-page.sh
set -euo pipefail
cd "$(dirname "$0")/.."

OPEN=${OPEN:-100000}
RULES=${RULES:-99}
SAMPLES=${SAMPLES:-20}
STORE=${STORE:-postgres}
STATE=invariantd_bench_open_page_state
. bench/lib.sh

python3 - "$work" "$OPEN" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER, amount TEXT)")
c.executemany("INSERT INTO t VALUES (?, 0, ?)", ((i, "%d.%02d" % (i % 500, i % 100)) for i in range(1, int(sys.argv[2]) + 1)))
c.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, ok INTEGER)")
c.executemany("INSERT INTO s VALUES (?, ?)", ((i, 0 if i % 100 < 20 else 1) for i in range(1, 10001)))
c.commit()
PY
case $STORE in
    postgres) fresh_state; url="$PG/$STATE" ;;
    sqlite) url="sqlite://state.db" ;;
    *) echo "unknown STORE $STORE (postgres or sqlite)" >&2; exit 1 ;;
esac
port=$(free_port)
mkdir "$work/rules"
cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db", max_connections: 4 }
state: { url: "$url" }
rules: [rules/]
http: { listen: "127.0.0.1:$port" }
YAML
cat > "$work/rules/big.yaml" <<YAML
name: big
every: 5m
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, amount FROM t" }
assert: t.ok == 1
message: "order {{key}} is not ok"
impact: { value: "decimal(t.amount)", unit: eur }
YAML
for ((i = 0; i < RULES; i++)); do
    cat >> "$work/rules/small.yaml" <<YAML
---
name: small_$i
every: 5m
key: id
datasets:
  s: { source: shop, query: "SELECT id, ok FROM s WHERE id % $RULES = $i" }
assert: s.ok == 1
YAML
done

daemon
# Open violations as the daemon exports them (0 before it answers).
open_now() { { curl -sf "http://127.0.0.1:$port/metrics" || true; } | awk '/^invariantd_violations_open\{/ {n += $NF} END {print n + 0}'; }
deadline=$(( SECONDS + 600 ))
until [ "$(open_now)" -ge "$OPEN" ]; do
    [ $SECONDS -gt $deadline ] && { echo "FAIL: $OPEN not open in 600 s" >&2; exit 1; }
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: the daemon stopped" >&2; pid=; exit 1; }
    sleep 1
done
sleep 15
open=$(open_now)
[ "$open" -ge "$OPEN" ] || { echo "FAIL: $open open, expected at least $OPEN" >&2; exit 1; }

percentile() { sort -n | awk -v p="$1" '{v[NR] = $1} END {i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i]}'; }
ms() { awk '{printf "%.1f", $1 * 1000}'; }
echo "store: $STORE, open violations: $open (big: $OPEN, the others 2,000 among them)"
for path in /ui/content /ui/rules/big "/ui/rules/big?window=7d" "/api/v1/violations?limit=100"; do
    for ((s = 0; s < SAMPLES; s++)); do
        curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$path" || echo 999
    done > "$work/page"
    echo "$path: median $(percentile 50 < "$work/page" | ms) ms, slowest $(percentile 100 < "$work/page" | ms) ms"
done
