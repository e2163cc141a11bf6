#!/usr/bin/env bash
# Idle is idle: a daemon with 100 rules (every hour; ten of them offer repairs, and one of
# those has ten waiting for a person) and nothing due, on a PostgreSQL state store. After
# every rule's first run and a settling pause, for DURATION seconds: the state store's
# transactions (from pg_stat_database; a statement outside an explicit transaction counts
# one) and the daemon's CPU time, both per minute. What is left is the lease keeper's round (one
# transaction every `cluster.renew`): a daemon alone waits for its own changes and for what is
# due, and the store watch's ping each second runs no statement. SETTLE must outlast
# PostgreSQL's report of the start-up's transactions (a backend reports up to 10 s after it
# goes idle).
#
#   bench/nothing-due.sh                                  # 120 s, the release build
#   BIN=/path/to/older/invariantd bench/nothing-due.sh    # the same for another build
#   INVARIANTD_BENCH_PG=postgres://user@host:5432 bench/nothing-due.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=${RULES:-100}
DURATION=${DURATION:-120}
SETTLE=${SETTLE:-15}
STATE=invariantd_bench_idle_state
. bench/lib.sh
fresh_state

python3 - "$work" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER, note TEXT)")
c.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, 0 if i % 50 == 0 else 1, "n%d" % i) for i in range(1, 1001)])
c.commit()
PY
port=$(free_port)
mkdir "$work/rules"
cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db", max_connections: 8 }
state: { url: "$PG/$STATE" }
rules: [rules/]
http: { listen: "127.0.0.1:$port" }
YAML
for i in $(seq 1 "$RULES"); do
    cat >> "$work/rules/rules.yaml" <<YAML
---
name: rule_$i
every: 1h
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, note FROM t WHERE id % $RULES = $((i % RULES))" }
assert: t.ok == 1
YAML
    if [ "$i" -gt 40 ] && [ "$i" -le 50 ]; then
        cat >> "$work/rules/rules.yaml" <<YAML
repair:
  mode: approve
  action:
    sql: { source: shop, statement: "UPDATE t SET ok = 1 WHERE id = ?1", params: [key] }
YAML
    fi
done

daemon
runs() { psql "$PG/$STATE" -qXAt -c "SELECT count(*) FROM runs" 2>/dev/null || echo 0; }
deadline=$(( SECONDS + 120 ))
until [ "$(runs)" -ge "$RULES" ]; do
    [ $SECONDS -gt $deadline ] && { echo "FAIL: the first runs did not finish" >&2; exit 1; }
    sleep 1
done
sleep "$SETTLE"

xacts() { psql "$PG/postgres" -qXAt -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$STATE'"; }
cpu() { awk -v c="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / c}' "/proc/$pid/stat"; }
x0=$(xacts); c0=$(cpu); r0=$(runs)
sleep "$DURATION"
x1=$(xacts); c1=$(cpu); r1=$(runs)
# Each psql call above is a transaction of its own on the state database: runs() is called
# once at each end.
per_min() { echo "scale=1; ($1) * 60 / $DURATION" | bc; }
echo "rules: $RULES (10 with repairs, 10 repairs waiting), runs during the measure: $(( r1 - r0 ))"
echo "state store transactions per minute: $(per_min "$x1 - $x0 - 1")"
echo "daemon CPU seconds per minute: $(echo "scale=3; ($c1 - $c0) * 60 / $DURATION" | bc)"
