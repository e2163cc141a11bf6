# Shared by the bench scripts that run a daemon on a PostgreSQL state store; sourced, not run.
#
#   STATE=invariantd_bench_x; . bench/lib.sh
#
# Sets PG (INVARIANTD_BENCH_PG, or the local server as postgres), BIN (the release build,
# built now, unless BIN is given), work (a fresh temporary directory) and pid (the daemon's,
# empty until the script starts one). `stop` stops that daemon; on exit the daemon is
# stopped, the directory removed and the database $STATE dropped. `fresh_state` (re)creates
# $STATE; `free_port` prints a free loopback port; `daemon` starts `invariantd run` in $work
# (logging at LOG_LEVEL, `error` unless set).
PG=${INVARIANTD_BENCH_PG:-postgres://postgres@127.0.0.1:5432}
: "${STATE:?set STATE (the state database) before sourcing bench/lib.sh}"

if [ -z "${BIN:-}" ]; then
    cargo build --release --locked --quiet
    BIN=$PWD/target/release/invariantd
fi
work=$(mktemp -d)
pid=
stop() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    wait 2>/dev/null || true
    pid=
}
bench_cleanup() {
    stop
    rm -rf "$work"
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $STATE" >/dev/null 2>&1 || true
}
trap bench_cleanup EXIT

fresh_state() {
    psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $STATE" -c "CREATE DATABASE $STATE" >/dev/null
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
daemon() {
    (cd "$work" && exec "$BIN" run --log-level "${LOG_LEVEL:-error}" "$@") &
    pid=$!
}
