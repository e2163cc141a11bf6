#!/usr/bin/env bash
# Partitioned full sweeps: the same rule over the same data, swept by 1, 2 and 3 replicas of
# `invariantd run` sharing one PostgreSQL state store. `N` orders (default 3,000,000) and their
# stock lines on PostgreSQL, one order in a thousand with nothing reserved; the rule has
# `partition: { keys: N/12 }`. For each replica count, on a fresh state store: the first full
# sweep reads every key at once (and samples where the next ones split), the next ones are
# split into 13 ranges read by whichever replica is free. It prints the first (single) sweep
# and the best of the next two (partitioned) — each the run's recorded duration, from its
# judging instant until its last range was read and merged — fails unless every sweep found
# exactly the planted violations, and prints a Markdown block for bench/RESULTS.md with the
# machine's core count (the replicas, PostgreSQL and this script share them).
#
#   bench/partitions.sh                    # N=3000000
#   N=10000000 bench/partitions.sh
#   INVARIANTD_BENCH_PG=postgres://user@host:5432 bench/partitions.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-3000000}
PG=${INVARIANTD_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
P=invariantd_bench_parts
EVERY=${EVERY:-20s}

cargo build --release --locked --quiet
BIN=$PWD/target/release/invariantd
work=$(mktemp -d)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
cleanup() {
    stop_all
    rm -rf "$work"
    if [ -z "${KEEP:-}" ]; then
        for db in "$P" "${P}_state"; do
            psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT
log() { printf '==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

log "building $N orders and their stock on PostgreSQL"
psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $P" -c "CREATE DATABASE $P"
psql "$PG/$P" -qX <<SQL
CREATE TABLE orders (id BIGINT PRIMARY KEY, amount NUMERIC(12,2));
INSERT INTO orders SELECT g, (g % 10000) / 100.0 FROM generate_series(1, $N) g;
CREATE TABLE stock (order_id BIGINT PRIMARY KEY, reserved INT);
INSERT INTO stock SELECT g, CASE WHEN g % 1000 = 7 THEN 0 ELSE 1 END FROM generate_series(1, $N) g;
VACUUM ANALYZE;
SQL
planted=$(psql "$PG/$P" -qXAt -c "SELECT count(*) FROM stock WHERE reserved = 0")

mkdir "$work/rules"
cat > "$work/rules/reserved.yaml" <<YAML
name: paid_reserved
every: $EVERY
key: id
partition: { keys: $(( N / 12 )) }
datasets:
  o: { source: shop, query: "SELECT id, amount FROM orders" }
  s: { source: shop, query: "SELECT order_id AS id, reserved FROM stock" }
assert: s != null && s.reserved == 1
YAML

# sweeps REPLICAS: the durations (s) of the first three sweeps, on a fresh state store.
sweeps() {
    local n=$1 i port
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS ${P}_state" -c "CREATE DATABASE ${P}_state"
    for i in $(seq 1 "$n"); do
        mkdir -p "$work/r$i"
        port=$(free_port)
        cat > "$work/r$i/invariantd.yaml" <<YAML
sources:
  shop: { url: "$PG/$P", max_connections: 4 }
state: { url: "$PG/${P}_state" }
rules: [../rules/]
cluster: { lease: 15s, renew: 5s }
http: { listen: "127.0.0.1:$port" }
YAML
        (cd "$work/r$i" && exec "$BIN" run --log-level warn 2> "$work/r$i/daemon.log") &
        pids+=($!)
    done
    local deadline=$(( SECONDS + 600 ))
    while :; do
        local done
        done=$(psql "$PG/${P}_state" -qXAt -c "SELECT count(*) FROM runs WHERE rule = 'paid_reserved'" 2>/dev/null || echo 0)
        [ "$done" -ge 3 ] && break
        if [ $SECONDS -gt $deadline ]; then
            echo "FAIL: three sweeps did not finish in 10 minutes" >&2
            cat "$work"/r*/daemon.log >&2
            exit 1
        fi
        sleep 1
    done
    stop_all
    psql "$PG/${P}_state" -qXAt -F ' ' -c "SELECT (finished_us - started_us) / 1e6, outcome, violations, keys_judged FROM runs WHERE rule = 'paid_reserved' ORDER BY started_us LIMIT 3"
}

declare -A single parted readers
for n in 1 2 3; do
    log "$n replica(s)"
    out=$(sweeps "$n")
    echo "$out" >&2
    while read -r secs outcome violations keys; do
        if [ "$outcome" != fail ] || [ "$violations" != "$planted" ] || [ "$keys" != "$N" ]; then
            echo "FAIL: a sweep with $n replica(s) found $violations violations over $keys keys ($outcome); $planted were planted over $N" >&2
            exit 1
        fi
    done <<< "$out"
    single[$n]=$(echo "$out" | head -n 1 | cut -d' ' -f1)
    parted[$n]=$(echo "$out" | tail -n 2 | cut -d' ' -f1 | sort -n | head -n 1)
    readers[$n]=$(psql "$PG/${P}_state" -qXAt -c "SELECT count(DISTINCT holder) FROM sweep_parts")
done

cores=$(nproc)
echo
echo "### Partitioned full sweeps (\`bench/partitions.sh\`), $(date +%F)"
echo
echo "$N orders and $N stock lines on PostgreSQL, $planted broken; \`partition: { keys: $(( N / 12 )) }\` (13 ranges). $cores cores, shared by the replicas, PostgreSQL and the script."
echo
echo "| replicas | first sweep (whole) | partitioned sweep | replicas that read ranges | speed-up over 1 replica |"
echo "| --- | --- | --- | --- | --- |"
for n in 1 2 3; do
    printf '| %d | %.2f s | %.2f s | %s | %.2f × |\n' "$n" "${single[$n]}" "${parted[$n]}" "${readers[$n]}" "$(echo "${parted[1]} / ${parted[$n]}" | bc -l)"
done
