#!/usr/bin/env bash
# Full-sweep benchmark: one rule joining two datasets of N keys each (default a million) on
# PostgreSQL, against `COPY` of the same two ordered datasets (the time PostgreSQL needs just to
# hand the rows out), with peak memory at two sizes to show it does not grow with the table.
#
#   bench/check-million.sh            # N=1000000, and N/4 for the memory comparison
#   N=2000000 bench/check-million.sh
#   INVARIANTD_BENCH_PG=postgres://user@host:5432 bench/check-million.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000000}
PG=${INVARIANTD_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
RUNS=${RUNS:-3}
DB=invariantd_bench

cargo build --release --quiet
BIN=target/release/invariantd

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PAYMENTS="SELECT order_id, amount, updated_at FROM payments WHERE status = 'captured'"
RESERVATIONS="SELECT order_id, quantity, updated_at FROM reservations WHERE state = 'reserved'"

cat > "$work/invariantd.yaml" <<YAML
sources:
  pg: { url: "$PG/$DB", statement_timeout: 10m }
rules: [rules/]
YAML
mkdir "$work/rules"
cat > "$work/rules/bench.yaml" <<YAML
name: bench_paid_implies_reserved
key: order_id
grace: 5m
datasets:
  payment: { source: pg, query: "$PAYMENTS", updated_at: updated_at }
  reservation: { source: pg, query: "$RESERVATIONS", updated_at: updated_at }
assert: payment == null || (reservation != null && reservation.quantity > 0)
message: "order {{key}}: {{payment.amount}} captured, nothing reserved"
YAML

generate() { # generate N: one missing reservation per thousand orders
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql "$PG/$DB" -qX <<SQL
CREATE TABLE payments (order_id BIGINT PRIMARY KEY, amount NUMERIC(12,2), status TEXT, updated_at TIMESTAMPTZ);
CREATE TABLE reservations (order_id BIGINT PRIMARY KEY, quantity INT, state TEXT, updated_at TIMESTAMPTZ);
INSERT INTO payments SELECT g, (g % 10000) / 100.0, 'captured', now() - interval '1 day' FROM generate_series(1, $1) g;
INSERT INTO reservations SELECT g, 1 + g % 3, 'reserved', now() - interval '1 day' FROM generate_series(1, $1) g WHERE g % 1000 <> 0;
VACUUM ANALYZE;
SQL
}

best() { sort -n | head -n 1; }

seconds() { # seconds COMMAND...: wall time of one run
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

copy_both() { # both datasets at once, as the check reads them
    psql "$PG/$DB" -qX -c "\\copy (SELECT * FROM ($PAYMENTS) q ORDER BY order_id) TO '/dev/null'" &
    psql "$PG/$DB" -qX -c "\\copy (SELECT * FROM ($RESERVATIONS) q ORDER BY order_id) TO '/dev/null'" &
    wait
}

check() { "$BIN" --config "$work/invariantd.yaml" check --format json > "$work/out.json" || [ $? -eq 1 ]; }

peak_kib() { # exit status 1 means violations were found, which they are
    { /usr/bin/time -f %M "$BIN" --config "$work/invariantd.yaml" check --format json 2>&1 >/dev/null || true; } | tail -n 1
}

small=$((N / 4))
generate "$small"
rss_small=$(peak_kib)

generate "$N"
copy_t=$(for _ in $(seq "$RUNS"); do seconds copy_both; done | best)
check_t=$(for _ in $(seq "$RUNS"); do seconds check; done | best)
rss_large=$(peak_kib)
violations=$(grep -c '"key"' "$work/out.json" || true)

ratio=$(echo "scale=2; $check_t / $copy_t" | bc)
printf 'keys per dataset      %s\n' "$N"
printf 'violations found      %s (expected %s)\n' "$violations" "$((N / 1000))"
printf 'COPY of both datasets %.3f s (best of %s)\n' "$copy_t" "$RUNS"
printf 'invariantd check      %.3f s (best of %s), %s x COPY\n' "$check_t" "$RUNS" "$ratio"
printf 'peak RSS              %s KiB at %s keys, %s KiB at %s keys\n' "$rss_small" "$small" "$rss_large" "$N"
[ -n "${KEEP:-}" ] || psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $DB"
