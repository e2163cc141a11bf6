#!/usr/bin/env bash
# Memory per open violation: a daemon with one rule over a SQLite table of N rows (default
# 1,000,000) of which OPEN are broken, on a PostgreSQL state store, run every EVERY seconds.
# For each count in OPENS (default "0 100000 1000000") it starts a fresh daemon, waits until
# RUNS_AFTER (3) runs are recorded with every broken row open, and prints the daemon's
# resident memory then and its peak (VmHWM), and the peak less the peak with none open,
# per open violation. The target: at most 500 bytes per open violation, 1M open under 1 GB.
#
#   bench/open-violations.sh
#   OPENS="0 100000" bench/open-violations.sh
#   BIN=/path/to/older/invariantd bench/open-violations.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
OPENS=${OPENS:-0 100000 1000000}
EVERY=${EVERY:-20}
RUNS_AFTER=${RUNS_AFTER:-3}
STATE=invariantd_bench_open_state
. bench/lib.sh

python3 - "$work" "$N" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount TEXT, note TEXT)")
c.executemany("INSERT INTO t VALUES (?, ?, ?)",
              ((i, "%d.%02d" % (i % 500, i % 100), "order %d" % i) for i in range(1, int(sys.argv[2]) + 1)))
c.commit()
PY

kib() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }
runs() { psql "$PG/$STATE" -qXAt -c "SELECT count(*) FROM runs WHERE outcome <> 'unknown'" 2>/dev/null || echo 0; }
opened() { psql "$PG/$STATE" -qXAt -c "SELECT count(*) FROM violations WHERE state = 'open'" 2>/dev/null || echo 0; }

printf '| open violations | RSS after %s runs (MiB) | peak RSS (MiB) | peak over none open, per open violation |\n' "$RUNS_AFTER"
printf '| --- | --- | --- | --- |\n'
base=
for open in $OPENS; do
    fresh_state
    port=$(free_port)
    mkdir -p "$work/rules"
    cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db" }
state: { url: "$PG/$STATE" }
rules: [rules/]
http: { listen: "127.0.0.1:$port" }
YAML
    cat > "$work/rules/rules.yaml" <<YAML
name: broken_orders
every: ${EVERY}s
key: id
datasets:
  t: { source: shop, query: "SELECT id, amount, note FROM t" }
assert: t.id > $open
message: "order {{key}} ({{t.note}}) is broken"
impact: { value: "decimal(t.amount)", unit: eur }
YAML
    daemon
    deadline=$(( SECONDS + 60 * RUNS_AFTER + 300 ))
    until [ "$(runs)" -ge "$RUNS_AFTER" ]; do
        [ $SECONDS -gt $deadline ] && { echo "FAIL: $RUNS_AFTER runs did not finish" >&2; exit 1; }
        kill -0 "$pid" 2>/dev/null || { echo "FAIL: the daemon stopped" >&2; pid=; exit 1; }
        sleep 1
    done
    got=$(opened)
    [ "$got" -eq "$open" ] || { echo "FAIL: $got open violations, not $open" >&2; exit 1; }
    rss=$(kib "$pid" VmRSS)
    hwm=$(kib "$pid" VmHWM)
    stop
    [ -z "$base" ] && base=$hwm
    per=-
    [ "$open" -gt 0 ] && per="$(( (hwm - base) * 1024 / open )) B"
    printf '| %s | %s | %s | %s |\n' "$open" "$(( rss / 1024 ))" "$(( hwm / 1024 ))" "$per"
done
