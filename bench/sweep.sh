#!/usr/bin/env bash
# The performance benchmark (see bench/README.md): one command builds the shop's databases at
# a chosen scale with a known set of broken orders, then measures on the same data, in one run:
#   (a) COPY of the rule's datasets, concurrently, to /dev/null — the physical limit;
#   (b) `invariantd check`, a full sweep of the same rule, checked against the known set;
#   (c) an incremental run (`run --once`) after 1,000 orders changed, 10 of them broken;
#   (d) peak RSS of (b) and (c);
#   (e) reladiff on the same two key sets;
#   (f) the full sweep again with the source's `max_rows_per_second` (PACE, default 1,000,000);
#   (g) the hand-written anti-join a monolith would run, with both tables in one database;
#   (h) the same invariant over key-only rows (both datasets `SELECT order_id …`, `many`,
#       `size(payment) == 0 || size(reservation) > 0`) against COPY of those queries;
#   and both rules with their datasets on MariaDB against `mariadb --quick --batch`.
# It prints the ratios to COPY and a Markdown block for bench/RESULTS.md.
#
#   bench/sweep.sh                     # N=1000000 orders
#   N=10000000 bench/sweep.sh          # ten million (about 3 GB of tables)
#   SCALES="1000000 10000000" bench/sweep.sh   # each in turn, then both side by side
#   RUNS=5 SKIP_MARIADB=1 SKIP_RELADIFF=1 SKIP_ANTIJOIN=1 bench/sweep.sh
#   INVARIANTD_BENCH_PG=postgres://user@host:5432 INVARIANTD_BENCH_MYSQL=mysql://root@host:3306 bench/sweep.sh
#   BIN=/path/to/invariantd bench/sweep.sh     # that build instead of building this checkout
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
RUNS=${RUNS:-3}
PG=${INVARIANTD_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
MY=${INVARIANTD_BENCH_MYSQL:-mysql://root@127.0.0.1:3306}
P=invariantd_bench
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/invariantd-bench-venv

if [ -n "${SCALES:-}" ]; then
    # Each scale is a whole run of this script (its own block), then one table of them all.
    side=$(mktemp)
    trap 'rm -f "$side"' EXIT
    for n in $SCALES; do
        N=$n SCALES= SIDE=$side bench/sweep.sh
    done
    python3 bench/side-by-side.py "$side"
    exit 0
fi

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/invariantd
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf '==> %s\n' "$*" >&2; }
best() { sort -n | head -n 1; }
seconds() { # seconds COMMAND...: wall time of one run, its output discarded
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}
ratio() { echo "scale=2; $1 / $2" | bc; }
fmt() { if [ "$1" = - ]; then echo -; else printf '%.3f' "$1"; fi; }
peak_kib() { # peak_kib COMMAND...: the command's peak resident memory
    { /usr/bin/time -f %M "$@" 2>&1 >/dev/null || true; } | tail -n 1
}

# --- the shop on PostgreSQL: one database per service ------------------------------------
# Orders 1..N. 82% of payments are captured (g % 50 < 41) and those orders have two reserved
# reservation lines (1.64 per order); the broken orders are the captured ones with
# g % 1000 = 7, whose lines were released.
PAYMENTS="SELECT order_id, amount, updated_at FROM payments WHERE status = 'captured'"
RESERVATIONS="SELECT order_id, sku, quantity, updated_at FROM reservations WHERE state = 'reserved'"

log "building the shop: $N orders on PostgreSQL"
for db in orders payments inventory shipping; do
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS ${P}_$db" -c "CREATE DATABASE ${P}_$db"
done
psql "$PG/${P}_orders" -qX <<SQL
CREATE TABLE orders (order_id BIGINT PRIMARY KEY, status TEXT, total NUMERIC(12,2), updated_at TIMESTAMPTZ);
INSERT INTO orders SELECT g, 'paid', (g % 10000) / 100.0, now() - interval '1 day' FROM generate_series(1, $N) g;
VACUUM ANALYZE;
SQL
psql "$PG/${P}_payments" -qX <<SQL
CREATE TABLE payments (order_id BIGINT PRIMARY KEY, amount NUMERIC(12,2), status TEXT, updated_at TIMESTAMPTZ);
INSERT INTO payments SELECT g, (g % 10000) / 100.0, CASE WHEN g % 50 < 41 THEN 'captured' ELSE 'refunded' END,
    now() - interval '1 day' FROM generate_series(1, $N) g;
CREATE INDEX ON payments (updated_at);
CREATE VIEW captured AS SELECT order_id FROM payments WHERE status = 'captured';
VACUUM ANALYZE;
SQL
psql "$PG/${P}_inventory" -qX <<SQL
CREATE TABLE reservations (order_id BIGINT, sku INT, quantity INT, state TEXT, updated_at TIMESTAMPTZ, PRIMARY KEY (order_id, sku));
INSERT INTO reservations SELECT g, s, 1 + g % 3, CASE WHEN g % 1000 = 7 THEN 'released' ELSE 'reserved' END,
    now() - interval '1 day' FROM generate_series(1, $N) g, generate_series(1, 2) s WHERE g % 50 < 41;
CREATE INDEX ON reservations (updated_at);
CREATE VIEW reserved AS SELECT DISTINCT order_id FROM reservations WHERE state = 'reserved';
VACUUM ANALYZE;
SQL
psql "$PG/${P}_shipping" -qX <<SQL
CREATE TABLE shipments (order_id BIGINT PRIMARY KEY, state TEXT, updated_at TIMESTAMPTZ);
INSERT INTO shipments SELECT g, 'shipped', now() - interval '1 day' FROM generate_series(1, $N) g WHERE g % 50 < 41;
VACUUM ANALYZE;
SQL
python3 -c "
import sys
n = int(sys.argv[1])
print('\n'.join(str(g) for g in range(1, n + 1) if g % 50 < 41 and g % 1000 == 7))
" "$N" > "$work/expected"
expected=$(wc -l < "$work/expected")

rule() { # rule SOURCE_A SOURCE_B: the rule, both datasets on the given sources
    cat <<YAML
name: paid_implies_reserved
key: order_id
grace: 5m
incremental: { overlap: 1m, full_sweep: 24h }
datasets:
  payment: { source: $1, query: "$PAYMENTS", updated_at: updated_at }
  reservation: { source: $2, query: "$RESERVATIONS", updated_at: updated_at, many: true }
assert: payment == null || size(reservation) > 0
message: "order {{key}}: {{payment.amount}} captured, nothing reserved"
YAML
}
mkdir -p "$work/pg/rules" "$work/my/rules"
cat > "$work/pg/invariantd.yaml" <<YAML
sources:
  payments: { url: "$PG/${P}_payments", statement_timeout: 30m }
  inventory: { url: "$PG/${P}_inventory", statement_timeout: 30m }
state: { url: "sqlite://state.db" }
rules: [rules/]
YAML
rule payments inventory > "$work/pg/rules/rule.yaml"

check() { # check DIR: a full sweep; exit status 1 means violations were found
    "$BIN" --config "$1/invariantd.yaml" check --format json > "$1/out.json" || [ $? -eq 1 ]
}
found_exactly() { # found_exactly FILE: the keys of a check's JSON are exactly the expected ones
    python3 - "$1" "$work/expected" <<'PY'
import json, sys
found = sorted(int(v["key"]) for r in json.load(open(sys.argv[1]))["rules"] for v in r["violations"])
expected = [int(k) for k in open(sys.argv[2]).read().split()]
if found != expected:
    sys.exit(f"wrong result: {len(found)} keys found, {len(expected)} expected")
print(len(found))
PY
}
copy_pg() {
    psql "$PG/${P}_payments" -qX -c "\\copy (SELECT * FROM ($PAYMENTS) q ORDER BY order_id) TO '/dev/null'" &
    psql "$PG/${P}_inventory" -qX -c "\\copy (SELECT * FROM ($RESERVATIONS) q ORDER BY order_id) TO '/dev/null'" &
    wait
}

race() { # race EXPORT DIR: after a warm-up of each, the best time of the export (a function)
    # and of a check of DIR, RUNS of each, interleaved; prints both
    local exports=() checks=()
    "$1"; check "$2"
    for _ in $(seq "$RUNS"); do
        exports+=("$(seconds "$1")")
        checks+=("$(seconds check "$2")")
    done
    echo "$(printf '%s\n' "${exports[@]}" | best) $(printf '%s\n' "${checks[@]}" | best)"
}

log "PostgreSQL: COPY and check, $RUNS runs each, interleaved"
# The warm-up fills the caches and the binary's pages.
read -r copy_t check_t < <(race copy_pg "$work/pg")
check_found=$(found_exactly "$work/pg/out.json")
check_rss=$(peak_kib "$BIN" --config "$work/pg/invariantd.yaml" check --format json)
check_cpu=$({ /usr/bin/time -f '%U %S' "$BIN" --config "$work/pg/invariantd.yaml" check --format json 2>&1 >/dev/null || true; } | tail -n 1 | awk '{print $1 + $2}')

# (h) Key-only rows: the same invariant as an existence rule over the keys alone, what rules
# of the form "every captured payment has a reservation" read.
NARROW_P="SELECT order_id FROM payments WHERE status = 'captured'"
NARROW_R="SELECT order_id FROM reservations WHERE state = 'reserved'"
narrow_rule() { # narrow_rule SOURCE_A SOURCE_B
    cat <<YAML
name: paid_implies_reserved
key: order_id
datasets:
  payment: { source: $1, query: "$NARROW_P", many: true }
  reservation: { source: $2, query: "$NARROW_R", many: true }
assert: size(payment) == 0 || size(reservation) > 0
YAML
}
mkdir -p "$work/narrow/rules"
cp "$work/pg/invariantd.yaml" "$work/narrow/"
narrow_rule payments inventory > "$work/narrow/rules/rule.yaml"
copy_narrow() {
    psql "$PG/${P}_payments" -qX -c "\\copy (SELECT * FROM ($NARROW_P) q ORDER BY order_id) TO '/dev/null'" &
    psql "$PG/${P}_inventory" -qX -c "\\copy (SELECT * FROM ($NARROW_R) q ORDER BY order_id) TO '/dev/null'" &
    wait
}
log "PostgreSQL, key-only rows: COPY and check, $RUNS runs each, interleaved"
read -r narrow_copy_t narrow_check_t < <(race copy_narrow "$work/narrow")
found_exactly "$work/narrow/out.json" >/dev/null
narrow_rss=$(peak_kib "$BIN" --config "$work/narrow/invariantd.yaml" check --format json)
narrow_cpu=$({ /usr/bin/time -f '%U %S' "$BIN" --config "$work/narrow/invariantd.yaml" check --format json 2>&1 >/dev/null || true; } | tail -n 1 | awk '{print $1 + $2}')

PACE=${PACE:-1000000}
log "a sweep paced at $PACE rows per second"
mkdir -p "$work/paced/rules"
sed "s/statement_timeout: 30m }/statement_timeout: 30m, max_rows_per_second: $PACE }/" \
    "$work/pg/invariantd.yaml" > "$work/paced/invariantd.yaml"
cp "$work/pg/rules/rule.yaml" "$work/paced/rules/"
paced_t=$(seconds check "$work/paced")
found_exactly "$work/paced/out.json" >/dev/null
read -r paced_rows < <(python3 -c "
import json, sys
print(sum(r['rows_scanned'] for r in json.load(open(sys.argv[1]))['rules']))
" "$work/paced/out.json")

antijoin_t=-
if [ -z "${SKIP_ANTIJOIN:-}" ]; then
    log "the single-database anti-join: the reservations copied beside the payments"
    psql "$PG/${P}_payments" -qX <<SQL
CREATE TABLE reservations (order_id BIGINT, sku INT, quantity INT, state TEXT, updated_at TIMESTAMPTZ, PRIMARY KEY (order_id, sku));
INSERT INTO reservations SELECT g, s, 1 + g % 3, CASE WHEN g % 1000 = 7 THEN 'released' ELSE 'reserved' END,
    now() - interval '1 day' FROM generate_series(1, $N) g, generate_series(1, 2) s WHERE g % 50 < 41;
VACUUM ANALYZE reservations;
SQL
    antijoin() {
        psql "$PG/${P}_payments" -qX -c "\\copy (SELECT p.order_id FROM payments p WHERE p.status = 'captured' AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.order_id = p.order_id AND r.state = 'reserved')) TO '$work/antijoin.out'"
    }
    antijoin
    antijoin_t=$(for _ in $(seq "$RUNS"); do seconds antijoin; done | best)
    [ "$(wc -l < "$work/antijoin.out")" -eq "$expected" ] || { echo "error: the anti-join found $(wc -l < "$work/antijoin.out")" >&2; exit 1; }
    psql "$PG/${P}_payments" -qX -c "DROP TABLE reservations"
fi

reladiff_t=-
if [ -z "${SKIP_RELADIFF:-}" ]; then
    if [ ! -x "$VENV/bin/reladiff" ]; then
        log "installing reladiff into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q "reladiff[postgresql]"
    fi
    log "reladiff on the same key sets"
    reladiff_run() {
        "$VENV/bin/reladiff" "postgresql://${PG#postgres://}/${P}_payments" captured \
            "postgresql://${PG#postgres://}/${P}_inventory" reserved -k order_id > "$work/reladiff.out"
    }
    reladiff_t=$(seconds reladiff_run)
    reladiff_found=$(grep -c '^[-+]' "$work/reladiff.out" || true)
    [ "$reladiff_found" -eq "$expected" ] || { echo "error: reladiff found $reladiff_found, expected $expected" >&2; exit 1; }
fi

log "incremental: a full run, then 1,000 orders change (10 of them break), then a run"
(cd "$work/pg" && "$BIN" run --once >/dev/null 2>&1 || true)
psql "$PG/${P}_payments" -qX -At > "$work/changed" <<SQL
SELECT order_id FROM payments WHERE status = 'captured' AND order_id % 1000 <> 7 ORDER BY md5(order_id::text) LIMIT 1000;
SQL
keys=$(paste -sd, "$work/changed")
broken=$(head -n 10 "$work/changed" | paste -sd,)
# Stamped 5m30s ago: past the rule's 5m grace, so the run judges them, and after the previous
# run's start minus overlap and grace, where an incremental run looks from.
stamp="now() - interval '5 minutes 30 seconds'"
psql "$PG/${P}_payments" -qX -c "UPDATE payments SET amount = amount + 1, updated_at = $stamp WHERE order_id IN ($keys)"
psql "$PG/${P}_inventory" -qX -c "UPDATE reservations SET state = 'released', updated_at = $stamp WHERE order_id IN ($broken)"
incr_t=$(seconds bash -c "cd '$work/pg' && { /usr/bin/time -o '$work/incr.rss' -f %M '$BIN' run --once || [ \$? -eq 1 ]; }")
incr_rss=$(tail -n 1 "$work/incr.rss")
read -r incr_mode incr_changed incr_judged < <(python3 - "$work/pg/state.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(*c.execute("SELECT mode, keys_changed, keys_judged FROM runs ORDER BY id DESC LIMIT 1").fetchone())
PY
)
python3 - "$work/pg/state.db" "$work/expected" "$broken" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
open_keys = sorted(int(k) for (k,) in c.execute("SELECT key FROM violations WHERE state = 'open'"))
expected = sorted([int(k) for k in open(sys.argv[2]).read().split()] + [int(k) for k in sys.argv[3].split(",")])
if open_keys != expected:
    sys.exit(f"incremental run: {len(open_keys)} open, {len(expected)} expected")
PY
[ "$incr_mode" = incremental ] || { echo "error: the second run was $incr_mode, not incremental" >&2; exit 1; }

my_copy_t=-; my_check_t=-; my_narrow_copy_t=-; my_narrow_check_t=-
if [ -z "${SKIP_MARIADB:-}" ]; then
    log "MariaDB: the same two datasets, both on MariaDB"
    myhost=${MY#mysql://}; myuser=${myhost%@*}; myhost=${myhost#*@}
    mysql_cli() { mariadb -h "${myhost%:*}" -P "${myhost##*:}" -u "$myuser" "$@"; }
    mysql_cli -e "DROP DATABASE IF EXISTS $P; CREATE DATABASE $P"
    mysql_cli "$P" > /dev/null <<SQL
CREATE TABLE payments (order_id BIGINT PRIMARY KEY, amount DECIMAL(12,2), status VARCHAR(16), updated_at DATETIME(6));
INSERT INTO payments SELECT seq, (seq % 10000) / 100.0, IF(seq % 50 < 41, 'captured', 'refunded'), NOW(6) - INTERVAL 1 DAY FROM seq_1_to_$N;
CREATE TABLE reservations (order_id BIGINT, sku INT, quantity INT, state VARCHAR(16), updated_at DATETIME(6), PRIMARY KEY (order_id, sku));
INSERT INTO reservations SELECT seq, s.sku, 1 + seq % 3, IF(seq % 1000 = 7, 'released', 'reserved'), NOW(6) - INTERVAL 1 DAY
    FROM seq_1_to_$N, (SELECT 1 AS sku UNION ALL SELECT 2) s WHERE seq % 50 < 41;
ANALYZE TABLE payments, reservations;
SQL
    cat > "$work/my/invariantd.yaml" <<YAML
sources:
  shop: { url: "$MY/$P", statement_timeout: 30m, max_connections: 2 }
rules: [rules/]
YAML
    rule shop shop > "$work/my/rules/rule.yaml"
    copy_my() {
        mysql_cli --quick --batch "$P" -e "SELECT * FROM ($PAYMENTS) q ORDER BY order_id" > /dev/null &
        mysql_cli --quick --batch "$P" -e "SELECT * FROM ($RESERVATIONS) q ORDER BY order_id" > /dev/null &
        wait
    }
    read -r my_copy_t my_check_t < <(race copy_my "$work/my")
    found_exactly "$work/my/out.json" >/dev/null
    my_rss=$(peak_kib "$BIN" --config "$work/my/invariantd.yaml" check --format json)
    mkdir -p "$work/mynarrow/rules"
    cp "$work/my/invariantd.yaml" "$work/mynarrow/"
    narrow_rule shop shop > "$work/mynarrow/rules/rule.yaml"
    copy_my_narrow() {
        mysql_cli --quick --batch "$P" -e "SELECT * FROM ($NARROW_P) q ORDER BY order_id" > /dev/null &
        mysql_cli --quick --batch "$P" -e "SELECT * FROM ($NARROW_R) q ORDER BY order_id" > /dev/null &
        wait
    }
    read -r my_narrow_copy_t my_narrow_check_t < <(race copy_my_narrow "$work/mynarrow")
    found_exactly "$work/mynarrow/out.json" >/dev/null
    mysql_cli -e "DROP DATABASE IF EXISTS $P"
fi

[ -n "${KEEP:-}" ] || for db in orders payments inventory shipping; do
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS ${P}_$db"
done

[ -z "${SIDE:-}" ] || echo "$N $copy_t $check_t $incr_t $antijoin_t $reladiff_t $narrow_copy_t $narrow_check_t" \
    "$my_copy_t $my_check_t $my_narrow_copy_t $my_narrow_check_t $((check_rss / 1024)) $((narrow_rss / 1024))" >> "$SIDE"

rows=$((N * 41 / 50 * 3))
cat <<EOF

### $N orders ($(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(psql "$PG/postgres" -AtX -c 'SHOW server_version' | cut -d' ' -f1) / $(mariadb --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*-MariaDB' | head -n 1))

Rows read per sweep: about $rows (captured payments and their reserved lines). Best of $RUNS.

| measure | time | ratio | peak RSS |
| --- | --- | --- | --- |
| (a) COPY of both datasets, PostgreSQL | $(printf '%.3f' "$copy_t") s | 1 | |
| (b) \`invariantd check\`, PostgreSQL | $(printf '%.3f' "$check_t") s | **$(ratio "$check_t" "$copy_t") × COPY** | $((check_rss / 1024)) MiB |
| client CPU of (b) | $check_cpu s | | |
| (c) incremental run after 1,000 orders changed | $(printf '%.3f' "$incr_t") s | $(ratio "$incr_t" "$check_t") × (b) | $((incr_rss / 1024)) MiB |
| (f) (b) with \`max_rows_per_second: $PACE\` (both sources) | $(fmt "$paced_t") s | $(echo "$paced_rows / $paced_t" | bc) rows/s in all, at most $PACE per source | |
| (g) the anti-join in one database (both tables there) | $(fmt "$antijoin_t") s | $( [ "$antijoin_t" = - ] && echo - || echo "(b) = $(ratio "$check_t" "$antijoin_t") ×") this | |
| (e) reladiff, same two key sets | $(fmt "$reladiff_t") s | $( [ "$reladiff_t" = - ] && echo - || ratio "$reladiff_t" "$copy_t") × COPY | |
| (h) COPY of both key-only datasets, PostgreSQL | $(printf '%.3f' "$narrow_copy_t") s | 1 | |
| (h) \`invariantd check\` of the key-only rule, PostgreSQL | $(printf '%.3f' "$narrow_check_t") s | **$(ratio "$narrow_check_t" "$narrow_copy_t") × COPY** | $((narrow_rss / 1024)) MiB |
| client CPU of (h) | $narrow_cpu s | | |
| \`mariadb --quick --batch\` of both datasets | $(fmt "$my_copy_t") s | 1 | |
| \`invariantd check\`, MariaDB | $(fmt "$my_check_t") s | **$( [ "$my_check_t" = - ] && echo - || ratio "$my_check_t" "$my_copy_t") × mariadb** | $(( ${my_rss:-0} / 1024 )) MiB |
| \`mariadb --quick --batch\` of both key-only datasets | $(fmt "$my_narrow_copy_t") s | 1 | |
| \`invariantd check\` of the key-only rule, MariaDB | $(fmt "$my_narrow_check_t") s | **$( [ "$my_narrow_check_t" = - ] && echo - || ratio "$my_narrow_check_t" "$my_narrow_copy_t") × mariadb** | |

Results: (b) found exactly the $check_found planted violations; (c) was an \`$incr_mode\` run that
found $incr_changed keys changed, judged $incr_judged keys, and left open exactly the planted
violations and the 10 new ones.$( [ "$reladiff_t" = - ] || echo " reladiff found $expected differing keys.")$( [ "$my_check_t" = - ] || echo " MariaDB's check found exactly the planted violations.")
EOF
