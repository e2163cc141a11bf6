#!/usr/bin/env bash
# Soak: the daemon for DURATION seconds with 50 rules on a shop whose orders keep changing —
# new orders arrive, some broken; people fix some by hand; ten rules repair theirs by
# themselves (automatic `sql` repairs, enabled through the API); every alert goes to a local
# webhook. Right after the warm-up one order of rule_39 (which nothing else breaks) is broken
# and, two samples later, mended: a firing and a resolve that must arrive whatever chance did. Samples the daemon every SAMPLE seconds and compares the end with the state after
# WARMUP: resident memory, open file descriptors, the state store's size (which may grow only
# by the repairs' audit trail, kept for ever by design), the lag of rule runs behind their
# schedule (p99 of the gaps between runs of a rule, less its 1 s interval) and alert delivery
# (every alert the daemon counted as sent arrived, none failed, and firing alerts arrive soon
# after their group starts). Fails when any grows beyond its bound.
#
#   bench/soak.sh                          # 10 minutes, release build
#   DURATION=3600 bench/soak.sh            # the README's 1-hour figure
#   DURATION=120 PROFILE=debug bench/soak.sh   # what CI runs, on the tests' build
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
WARMUP=${WARMUP:-$(( DURATION / 4 < 300 ? DURATION / 4 : 300 ))}
PROFILE=${PROFILE:-release}
# The bounds: growth from the warm-up sample to the end.
RSS_GROWTH_MIB=${RSS_GROWTH_MIB:-32}
FD_GROWTH=${FD_GROWTH:-16}
STORE_BYTES_PER_REPAIR=${STORE_BYTES_PER_REPAIR:-8192}
STORE_SLACK_MIB=${STORE_SLACK_MIB:-8}
LAG_P99_MAX=${LAG_P99_MAX:-2.0}
ALERT_P99_MAX=${ALERT_P99_MAX:-10.0}

if [ "$PROFILE" = release ]; then
    cargo build --release --locked --quiet
else
    cargo build --locked --quiet
fi
BIN=$PWD/target/$PROFILE/invariantd
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
hook_port=$(free_port)
token=soak-admin-token-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
umask 077
printf 'soak:admin:%s\n' "$token" > "$work/tokens"
umask 022

python3 - "$work" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, ok INTEGER NOT NULL, note TEXT)")
c.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, 1, "order %d" % i) for i in range(1, 5001)])
c.commit()
PY

mkdir "$work/rules"
cat > "$work/invariantd.yaml" <<YAML
sources:
  shop: { url: "sqlite://shop.db", max_connections: 8 }
  shop_writer: { url: "sqlite://shop.db", max_connections: 2 }
state: { url: "sqlite://state.db", retention: 2m }
rules: [rules/]
max_concurrent_runs: 8
http: { listen: "127.0.0.1:$port" }
auth: { tokens_file: tokens }
outbound: { allow: [127.0.0.1] }
alerting:
  for: 0s
  evaluation_interval: 1s
  group_interval: 10s
  repeat_interval: 5m
  receivers:
    hook: { webhook: { url: "http://127.0.0.1:$hook_port/" } }
  routes:
    - { receivers: [hook] }
repairs: { workers: 2 }
YAML
for i in $(seq 0 49); do
    cat >> "$work/rules/rules.yaml" <<YAML
---
name: rule_$i
every: 1s
key: id
datasets:
  t: { source: shop, query: "SELECT id, ok, note FROM orders WHERE id % 50 = $i" }
assert: t.ok == 1
message: "{{key}} is broken ({{t.note}})"
YAML
    if [ "$i" -ge 40 ]; then
        cat >> "$work/rules/rules.yaml" <<YAML
repair:
  mode: auto
  max_auto_per_run: 100
  actions:
    fix:
      sql:
        source: shop_writer
        statement: "UPDATE orders SET ok = 1 WHERE id = ?1 AND ok = 0"
        params: [key]
      idempotent: true
YAML
    fi
done

# The shop and the webhook, in one Python process: each second 10 new orders (one in ten
# broken, except rule_39's, which the script breaks itself), 3 broken orders of the rules
# without repairs fixed by hand, the oldest orders beyond 5,000 deleted. The webhook records each alert with the time it arrived.
python3 - "$work" "$hook_port" <<'PY' &
import http.server, json, random, sqlite3, sys, threading, time
work, hook_port = sys.argv[1], int(sys.argv[2])
out = open(work + "/alerts.jsonl", "a", buffering=1)
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            a = json.loads(body)
            out.write(json.dumps({"at": time.time(), "rule": a.get("rule"), "event": a.get("event"), "starts_at": a.get("starts_at"), "id": a.get("id")}) + "\n")
        except ValueError:
            pass
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
threading.Thread(target=server.serve_forever, daemon=True).start()
db = sqlite3.connect(work + "/shop.db", timeout=10)
next_id = 5001
while True:
    start = time.time()
    try:
        rows = [(i, 0 if i % 50 != 39 and random.random() < 0.1 else 1, "order %d" % i)
                for i in range(next_id, next_id + 10)]
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", rows)
        next_id += 10
        db.execute("UPDATE orders SET ok = 1 WHERE id IN (SELECT id FROM orders WHERE ok = 0 AND id % 50 < 39 ORDER BY random() LIMIT 3)")
        db.execute("DELETE FROM orders WHERE id <= ?", (next_id - 5001,))
        db.commit()
    except sqlite3.OperationalError:
        db.rollback()
    time.sleep(max(0.0, 1.0 - (time.time() - start)))
PY
pids+=($!)

(cd "$work" && exec "$BIN" run --log-level warn 2> "$work/daemon.log") &
daemon=$!
pids+=($daemon)
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
for i in $(seq 40 49); do
    curl -sf -X POST -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/api/v1/rules/rule_$i/repairs/enable" >/dev/null
done

# One sample: time, RSS (KiB), open fds, state store (KiB), runs, repairs applied, alerts the
# daemon sent / failed, alerts received, run lag p99 (s), firing alert delay p99 (s).
cat > "$work/sample.py" <<'PY'
import json, sys, time, urllib.request
from datetime import datetime
t, rss, fds, store, port, work = sys.argv[1:]
metrics = sys.stdin.read()
def total(name, **labels):
    s = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
stamp = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
runs = total("invariantd_rule_runs_total")
applied = total("invariantd_repairs_total", outcome="applied")
sent = total("invariantd_alerts_sent_total", outcome="sent")
failed = total("invariantd_alerts_sent_total", outcome="failed")
# The last 1,000 runs (about 20 s): gaps between a rule's consecutive runs, less 1 s.
page = json.load(urllib.request.urlopen("http://127.0.0.1:%s/api/v1/runs?limit=1000" % port))
starts = {}
for r in page["items"]:
    starts.setdefault(r["rule"], []).append(stamp(r["started_at"]))
gaps = []
for s in starts.values():
    s.sort()
    gaps += [max(0.0, b - a - 1.0) for a, b in zip(s, s[1:])]
p99 = lambda xs: sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else 0.0
# Firing alerts that arrived in the last minute: arrival less the group's start.
now = time.time()
alerts = [json.loads(l) for l in open(work + "/alerts.jsonl")]
delays = [a["at"] - stamp(a["starts_at"]) for a in alerts
          if a["event"] == "firing" and a["at"] > now - 60 and a["starts_at"]]
print("%6s %9s %5s %9s %8d %8d %7d %6d %8d %8.2f %8.2f" % (t + "s", rss, fds, store, runs, applied, sent, failed, len(alerts), p99(gaps), p99(delays)))
PY
sample() {
    local rss fds store
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status")
    fds=$(ls "/proc/$daemon/fd" | wc -l)
    store=$(du -ck "$work"/state.db* | tail -n 1 | cut -f 1)
    curl -sf "http://127.0.0.1:$port/metrics" | python3 "$work/sample.py" "$1" "$rss" "$fds" "$store" "$port" "$work"
}

# One statement on the shop, waiting out the writers; prints what it returns.
shop_sql() {
    python3 - "$work/shop.db" "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
rows = db.execute(sys.argv[2]).fetchall()
db.commit()
print(" ".join(str(r[0]) for r in rows))
PY
}

printf '%6s %9s %5s %9s %8s %8s %7s %6s %8s %8s %8s\n' time "rss KiB" fds "store KiB" runs repaired sent failed received "lag p99" "alert p99"
warm= last=
for t in $(seq "$SAMPLE" "$SAMPLE" "$DURATION"); do
    sleep "$SAMPLE"
    if ! kill -0 "$daemon" 2>/dev/null; then
        echo "FAIL: the daemon exited"; cat "$work/daemon.log"; exit 1
    fi
    line=$(sample "$t")
    echo "$line"
    if [ -z "$warm" ] && [ "$t" -ge "$WARMUP" ]; then
        warm=$line
        planted=$(shop_sql "UPDATE orders SET ok = 0 WHERE id = (SELECT max(id) FROM orders WHERE id % 50 = 39) RETURNING id")
        mend_at=$(( t + 2 * SAMPLE ))
    fi
    if [ -n "${mend_at:-}" ] && [ "$t" -ge "$mend_at" ]; then
        shop_sql "UPDATE orders SET ok = 1 WHERE id = $planted" >/dev/null
        mend_at=
    fi
    last=$line
done

python3 - "$warm" "$last" "$work/alerts.jsonl" <<PY
import json, sys
w, e = sys.argv[1].split(), sys.argv[2].split()
f = lambda row, i: float(row[i])
fails = []
rss = (f(e, 1) - f(w, 1)) / 1024
if rss > $RSS_GROWTH_MIB: fails.append("resident memory grew %.1f MiB (bound $RSS_GROWTH_MIB)" % rss)
fds = f(e, 2) - f(w, 2)
if fds > $FD_GROWTH: fails.append("open file descriptors grew by %d (bound $FD_GROWTH)" % fds)
repairs = f(e, 5) - f(w, 5)
store = (f(e, 3) - f(w, 3)) * 1024
allowed = repairs * $STORE_BYTES_PER_REPAIR + $STORE_SLACK_MIB * 1024 * 1024
if store > allowed: fails.append("the state store grew %.1f MiB, over %.1f MiB for %d repairs" % (store / 2**20, allowed / 2**20, repairs))
if f(e, 9) > $LAG_P99_MAX: fails.append("run lag p99 %.2f s (bound $LAG_P99_MAX s)" % f(e, 9))
if f(e, 10) > $ALERT_P99_MAX: fails.append("firing alerts arrived %.2f s after their start, p99 (bound $ALERT_P99_MAX s)" % f(e, 10))
if f(e, 7) > 0: fails.append("%d alert deliveries failed" % f(e, 7))
if f(e, 8) < f(e, 6): fails.append("the daemon sent %d alerts, the webhook has %d" % (f(e, 6), f(e, 8)))
if repairs <= 0: fails.append("no repair was applied after the warm-up")
planted = {a["event"] for a in map(json.loads, open(sys.argv[3])) if a["rule"] == "rule_39"}
for event in ("firing", "resolved"):
    if event not in planted: fails.append("the order broken after the warm-up brought no %s alert" % event)
print()
print("from %s to %s: rss %+.1f MiB, fds %+d, store %+.1f MiB for %d repairs, runs %d, alerts %d; at the end run lag p99 %.2f s, firing alert p99 %.2f s"
      % (w[0], e[0], rss, fds, store / 2**20, repairs, f(e, 4) - f(w, 4), f(e, 8) - f(w, 8), f(e, 9), f(e, 10)))
if fails:
    print("FAIL: " + "; ".join(fails))
    sys.exit(1)
print("PASS")
PY
