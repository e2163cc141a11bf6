#!/usr/bin/env python3
"""Writes a long history into an invariantd state store that the daemon has migrated; for
bench/history.sh, which documents the shape.

    history-data.py postgres URL  DAYS RULES NOW_US
    history-data.py sqlite   PATH DAYS RULES NOW_US

At DAYS = 30, over the 31 days before NOW_US (the day beyond a 30-day retention is what the
first prune deletes): 2,000,000 runs of RULES rules (90 % pass, 8 % fail, 2 % unknown with
an error), 1,000,000 resolved violations (each rule's keys come back about every six days,
linked to the occurrence before by previous_id), 100,000 applied repairs (one violation in
ten), the audit log of those repairs (planned, then applied: 200,000 entries, sealed in a
chain `audit verify` accepts) and the cumulative counters to match. Fewer DAYS scale every
count down in proportion. Prints what it wrote: runs, resolved violations, repairs, audit
entries, and rule_0's passed runs.
"""
import hashlib
import subprocess
import sys

kind, where, days, rules, now_us = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
DAY = 86_400_000_000
scale = days / 30
span = int((days + days / 30) * DAY)
start = now_us - span
RUNS = int(2_000_000 * scale)
VIOLATIONS = int(1_000_000 * scale)
KEYS = 10_000
GENESIS = "invariantd-audit-v1"


def runs():
    for i in range(RUNS):
        started = start + i * span // RUNS
        r = i % 100
        outcome, error_kind, error = ("pass", None, None)
        if r < 2:
            outcome, error_kind, error = ("unknown", "source_unreachable", "source `shop`: connection refused")
        elif r < 10:
            outcome = "fail"
        yield (f"rule_{i % rules}", started, started + 40_000, outcome, 2000,
               3 if outcome == "fail" else 0, error_kind, error, 1000, 0, 0, "full", 0)


def violation_times(j):
    first = start + j * span // VIOLATIONS
    resolved = min(first + (5 + j % 600) * 60_000_000, now_us - 60_000_000)
    return first, resolved


def violations():
    for j in range(VIOLATIONS):
        first, resolved = violation_times(j)
        back = j - rules * KEYS
        yield (j + 1, f"rule_{j % rules}", f"k{(j // rules) % KEYS}", "resolved",
               f"order k{(j // rules) % KEYS} is paid but not reserved",
               '{"orders":{"id":%d,"state":"paid"}}' % j, first, resolved - 60_000_000, 3, resolved,
               back + 1 if back >= 0 else None, "%d.%02d" % (j % 500, j % 100), None)


def repairs():
    for n, j in enumerate(range(0, VIOLATIONS, 10)):
        first, _ = violation_times(j)
        key = f"k{(j // rules) % KEYS}"
        yield (n + 1, f"rule_{j % rules}", key, first, "applied", "auto", "release",
               '[{"name":"release","kind":"sql","params":["%s"]}]' % key,
               hashlib.sha256(f"{j}".encode()).hexdigest()[:32], first + 1_000_000, first + 2_000_000,
               1, 0, 1, 0, "applied: 1 row", first + 2_000_000)


def seal(prev, seq, at, actor, action, subject, details):
    h = hashlib.sha256()
    for field in (prev, str(seq), str(at), actor, action, subject, details):
        b = field.encode()
        h.update(b"%d:" % len(b))
        h.update(b)
    return h.hexdigest()


def audit():
    prev, seq = GENESIS, 0
    for r in repairs():
        for action, at in (("repair.planned", r[9]), ("repair.applied", r[10])):
            seq += 1
            subject, details = f"repair/{r[0]}", '{"rule":"%s","key":"%s"}' % (r[1], r[2])
            h = seal(prev, seq, at, "invariantd", action, subject, details)
            yield (at, "invariantd", action, subject, details, seq, prev, h)
            prev = h


def counters():
    per = {}
    for i in range(RUNS):
        r = i % 100
        outcome = "unknown" if r < 2 else "fail" if r < 10 else "pass"
        name = (f"rule_{i % rules}", f"runs_{outcome}")
        per[name] = per.get(name, 0) + 1
    for j in range(VIOLATIONS):
        for name in ("violations_detected", "violations_resolved"):
            k = (f"rule_{j % rules}", name)
            per[k] = per.get(k, 0) + 1
    for r in repairs():
        k = (r[1], "repairs:applied")
        per[k] = per.get(k, 0) + 1
    for (rule, name), value in per.items():
        yield (rule, name, value)


TABLES = [
    ("runs", "rule, started_us, finished_us, outcome, rows_scanned, violations, error_kind, error, "
             "keys_judged, keys_in_grace, keys_with_errors, mode, keys_changed", runs),
    ("violations", "id, rule, key, state, message, datasets, first_seen_us, last_seen_us, occurrences, "
                   "resolved_us, previous_id, impact, resolved_by", violations),
    ("repairs", "id, rule, key, occurrence_us, state, mode, action, actions, idempotency_key, created_us, "
                "updated_us, attempts, next_attempt_us, fence, interrupted, result, finished_us", repairs),
    ("audit_log", "at_us, actor, action, subject, details, seal_seq, prev_hash, hash", audit),
    ("rule_counters", "rule, name, value", counters),
]


def csv_field(v):
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    return '"' + v.replace('"', '""') + '"'


if kind == "postgres":
    for table, columns, rows in TABLES:
        copy = subprocess.Popen(
            ["psql", where, "-qX", "-v", "ON_ERROR_STOP=1", "-c",
             f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"],
            stdin=subprocess.PIPE, text=True)
        lines = []
        for row in rows():
            lines.append(",".join(csv_field(v) for v in row))
            if len(lines) == 10_000:
                copy.stdin.write("\n".join(lines) + "\n")
                lines = []
        copy.stdin.write("\n".join(lines) + ("\n" if lines else ""))
        copy.stdin.close()
        if copy.wait() != 0:
            sys.exit(f"COPY {table} failed")
    subprocess.run(["psql", where, "-qX", "-v", "ON_ERROR_STOP=1",
                    "-c", "SELECT setval(pg_get_serial_sequence('violations', 'id'), (SELECT max(id) FROM violations))",
                    "-c", "SELECT setval(pg_get_serial_sequence('repairs', 'id'), (SELECT max(id) FROM repairs))",
                    "-c", "VACUUM ANALYZE"], check=True, stdout=subprocess.DEVNULL)
elif kind == "sqlite":
    import sqlite3
    db = sqlite3.connect(where)
    db.execute("PRAGMA journal_mode = WAL")
    for table, columns, rows in TABLES:
        marks = ", ".join("?" for _ in columns.split(","))
        db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows())
    db.commit()
    db.execute("ANALYZE")
    db.close()
else:
    sys.exit(f"unknown store kind {kind}")
repaired = len(range(0, VIOLATIONS, 10))
passed = sum(1 for i in range(0, RUNS, rules) if i % 100 >= 10)
print(RUNS, VIOLATIONS, repaired, 2 * repaired, passed)
