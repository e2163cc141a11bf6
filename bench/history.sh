#!/usr/bin/env bash
# Long history: a daemon on a state store that already holds DAYS days of history, for each
# of DAYS_LIST (default "10 30") and each store of STORES (default "postgres sqlite"). At 30
# days: 2,000,000 runs, 1,000,000 resolved violations, 100,000 applied repairs and their
# 200,000 audit entries (bench/history-data.py writes them, over the 31 days before now:
# `state.retention` is DAYS, so the first prune has one day in thirty-one to delete); at 10
# days a third of that (both fill the 7-day chart's window). RULES (20) rules, every 10 s, over a SQLite shop where each finds 10
# broken orders, carry the history's names. For each, it prints:
#   - start-up: from starting `invariantd run` to /readyz answering 200 (the metrics are
#     restored from the store before that), and it fails unless the run counters shown are
#     the history's;
#   - pruning: the rows the first prune deleted, in how many batches, and the longest time a
#     batch held the writer (fails over MAX_BATCH_MS, 100);
#   - bookkeeping: a rule run's own state-store work (its open violations read, the run
#     recorded, its snapshot read back: `bookkeeping_ms` of the daemon's debug log), p50, p99
#     and max over MEASURE (60) seconds of runs;
#   - the page (/ui/content), /api/v1/rules (every rule with its last run) and the rule's page
#     with its history charts (/ui/rules/rule_0, ?window=24h and ?window=7d), median and
#     slowest of SAMPLES (20) each;
#   - `invariantd audit verify` of the whole chain, with the daemon stopped (fails unless the
#     chain is intact with every entry written), and `audit verify --since` the head as it was
#     SINCE (1000) entries before the end, median of 5 (fails unless intact with SINCE entries
#     checked).
# The bounds (the issue: they do not grow with history) are read by comparing the rows.
#
#   bench/history.sh
#   STORES=postgres DAYS_LIST=30 bench/history.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DAYS_LIST=${DAYS_LIST:-10 30}
STORES=${STORES:-postgres sqlite}
RULES=${RULES:-20}
MEASURE=${MEASURE:-60}
SAMPLES=${SAMPLES:-20}
MAX_BATCH_MS=${MAX_BATCH_MS:-100}
SINCE=${SINCE:-1000}
STATE=invariantd_bench_history_state
LOG_LEVEL=warn,invariantd=debug
. bench/lib.sh

python3 - "$work" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount TEXT)")
c.executemany("INSERT INTO t VALUES (?, ?)", ((i, "%d.%02d" % (i % 50, i % 100)) for i in range(1, 1001)))
c.commit()
PY
mkdir -p "$work/rules"
for ((i = 0; i < RULES; i++)); do
    cat > "$work/rules/rule_$i.yaml" <<YAML
name: rule_$i
every: 10s
key: id
datasets:
  t: { source: shop, query: "SELECT id, amount FROM t" }
assert: t.id % 100 != $i
message: "order {{key}} is broken"
impact: { value: "decimal(t.amount)", unit: eur }
YAML
done

percentile() { sort -n | awk -v p="$1" '{v[NR] = $1} END {i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i]}'; }
ms() { awk '{printf "%.1f", $1 * 1000}'; }

printf '| store | days | runs / resolved / repairs / audit entries | store size | start-up | first prune: rows, batches, longest batch | bookkeeping p50 / p99 / max | the page, median / slowest (ms) | /api/v1/rules | rule page, 24h charts | rule page, 7d charts | audit verify | audit verify --since (last %s) |\n' "$SINCE"
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for store in $STORES; do
    for days in $DAYS_LIST; do
        rm -f "$work"/state.db* "$work/log"
        case $store in
            postgres) fresh_state; url="$PG/$STATE"; target="$PG/$STATE" ;;
            sqlite) url="sqlite://state.db"; target="$work/state.db" ;;
            *) echo "unknown store $store" >&2; exit 1 ;;
        esac
        port=$(free_port)
        cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db" }
state: { url: "$url", retention: ${days}d }
rules: [rules/]
http: { listen: "127.0.0.1:$port" }
YAML
        (cd "$work" && "$BIN" migrate >/dev/null)
        counts=$(python3 bench/history-data.py "$store" "$target" "$days" "$RULES" "$(date +%s%6N)")
        # Written out before the daemon starts: its first commit would otherwise wait for the
        # load's dirty pages (an artefact of loading, not of history).
        [ "$store" = postgres ] && psql "$PG/$STATE" -qX -c CHECKPOINT
        sync
        case $store in
            postgres) size=$(psql "$PG/$STATE" -qXAt -c "SELECT pg_database_size(current_database())") ;;
            sqlite) size=$(cat "$work"/state.db* | wc -c) ;;
        esac
        read -r runs resolved repairs entries passes <<< "$counts"

        t0=$(date +%s.%N)
        daemon > "$work/log" 2>&1
        deadline=$(( SECONDS + 300 ))
        until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
            [ $SECONDS -gt $deadline ] && { echo "FAIL: not ready in 300 s" >&2; exit 1; }
            kill -0 "$pid" 2>/dev/null || { echo "FAIL: the daemon stopped" >&2; cat "$work/log" >&2; pid=; exit 1; }
            sleep 0.02
        done
        startup=$(echo "$(date +%s.%N) - $t0" | bc)
        shown=$(curl -sf "http://127.0.0.1:$port/metrics" \
            | awk '/^invariantd_rule_runs_total\{/ && /rule="rule_0"/ && /outcome="pass"/ {print $NF}')
        [ "${shown%.*}" -ge "$passes" ] 2>/dev/null \
            || { echo "FAIL: rule_0's passed runs show $shown, not the history's $passes" >&2; exit 1; }

        deadline=$(( SECONDS + 600 ))
        until grep -q "Pruned old runs" "$work/log"; do
            [ $SECONDS -gt $deadline ] && { echo "FAIL: no prune in 600 s" >&2; exit 1; }
            sleep 1
        done
        line=$(grep "Pruned old runs" "$work/log" | head -1)
        field() { grep -o "$1=[0-9]*" <<< "$line" | cut -d= -f2; }
        pruned_rows=$(field rows); batches=$(field batches); longest=$(field longest_batch_ms)
        [ "$longest" -le "$MAX_BATCH_MS" ] \
            || { echo "FAIL: a prune batch held the writer $longest ms (over $MAX_BATCH_MS)" >&2; exit 1; }

        from=$(wc -l < "$work/log")
        sleep "$MEASURE"
        tail -n +"$from" "$work/log" | grep "Rule run finished" | grep -o 'bookkeeping_ms=[0-9]*' \
            | cut -d= -f2 > "$work/bookkeeping"
        [ -s "$work/bookkeeping" ] || { echo "FAIL: no run recorded in $MEASURE s" >&2; exit 1; }
        book="$(percentile 50 < "$work/bookkeeping") / $(percentile 99 < "$work/bookkeeping") / $(percentile 100 < "$work/bookkeeping") ms"

        pages=()
        for path in /ui/content /api/v1/rules "/ui/rules/rule_0?window=24h" "/ui/rules/rule_0?window=7d"; do
            for ((s = 0; s < SAMPLES; s++)); do
                curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port$path" || echo 999
            done > "$work/page"
            pages+=("$(percentile 50 < "$work/page" | ms) / $(percentile 100 < "$work/page" | ms)")
        done
        stop

        t0=$(date +%s.%N)
        verified=$(cd "$work" && "$BIN" audit verify) \
            || { echo "FAIL: audit verify: $verified" >&2; exit 1; }
        verify=$(echo "$(date +%s.%N) - $t0" | bc)
        grep -q "intact: $entries entries" <<< "$verified" \
            || { echo "FAIL: audit verify: $verified (expected $entries entries)" >&2; exit 1; }
        from=$(( entries - SINCE ))
        case $store in
            postgres) kept=$(psql "$PG/$STATE" -qXAt -c "SELECT hash FROM audit_log WHERE seal_seq = $from") ;;
            sqlite) kept=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT hash FROM audit_log WHERE seal_seq = ?", (int(sys.argv[2]),)).fetchone()[0])' "$target" "$from") ;;
        esac
        for ((s = 0; s < 5; s++)); do
            t0=$(date +%s.%N)
            verified=$(cd "$work" && "$BIN" audit verify --since "$from:$kept") \
                || { echo "FAIL: audit verify --since: $verified" >&2; exit 1; }
            echo "$(date +%s.%N) - $t0" | bc
            grep -q "intact: $entries entries ($SINCE checked" <<< "$verified" \
                || { echo "FAIL: audit verify --since: $verified (expected $SINCE of $entries checked)" >&2; exit 1; }
        done > "$work/since"
        since=$(percentile 50 < "$work/since")

        printf '| %s | %s | %s / %s / %s / %s | %s MiB | %.2f s | %s, %s, %s ms | %s | %s | %s | %s | %s | %.1f s | %.3f s |\n' \
            "$store" "$days" "$runs" "$resolved" "$repairs" "$entries" "$(( size / 1048576 ))" "$startup" \
            "$pruned_rows" "$batches" "$longest" "$book" "${pages[@]}" "$verify" "$since"
    done
done
