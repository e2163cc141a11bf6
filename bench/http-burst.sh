#!/usr/bin/env bash
# The HTTP server under a flood of half-open connections: a client opens N connections that
# send part of a request's headers and never finish, while another probes `/readyz` on the same
# listener (no `http.probes_listen`) four times a second. Prints how many probes answered 200
# and the slowest; fails unless every probe did.
#
#   bench/http-burst.sh            # 15,000 connections, release build
#   N=2000 bench/http-burst.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-15000}
cargo build --release --locked --quiet
BIN=$PWD/target/release/invariantd
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n $((N + 1024))

python3 - "$work" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1] + "/shop.db")
c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ok INTEGER)")
c.executemany("INSERT INTO t VALUES (?, 1)", [(i,) for i in range(100)])
c.commit()
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$work/rules"
printf 'name: r\nevery: 1s\nkey: id\ndatasets:\n  t: { source: shop, query: "SELECT id, ok FROM t" }\nassert: t.ok == 1\n' > "$work/rules/r.yaml"
printf 'sources:\n  shop: { url: "sqlite://shop.db" }\nstate: { url: "sqlite://state.db" }\nrules: [rules/]\nhttp: { listen: "127.0.0.1:%s" }\n' "$port" > "$work/invariantd.yaml"
(cd "$work" && exec "$BIN" run --log-level error) &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done

python3 - "$N" "$port" <<'PY'
import http.client, socket, sys, threading, time
n, port = int(sys.argv[1]), int(sys.argv[2])
held, results, stop = [], [], threading.Event()
def probe():
    while not stop.is_set():
        asked = time.time()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            ok = r.status == 200
            c.close()
        except Exception:
            ok = False
        results.append((ok, time.time() - asked))
        time.sleep(0.25)
threading.Thread(target=probe, daemon=True).start()
started = time.time()
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        held.append(s)
    except OSError:
        pass
took = time.time() - started
time.sleep(5)
stop.set()
time.sleep(0.5)
answered = sum(1 for ok, _ in results if ok)
print("%d half-open connections opened in %.1f s; /readyz on the same listener answered %d of %d probes, the slowest in %.2f s"
      % (n, took, answered, len(results), max(d for _, d in results)))
sys.exit(0 if answered == len(results) else 1)
PY
