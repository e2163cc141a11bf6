"""The side-by-side table of `SCALES="1000000 10000000" bench/sweep.sh`: one line of figures
per scale (written by each run of the script to the file given), one column per scale."""
import sys

COLS = ["n", "copy", "check", "incr", "antijoin", "reladiff", "ncopy", "ncheck",
        "mycopy", "mycheck", "myncopy", "myncheck", "rss", "nrss"]
runs = [dict(zip(COLS, line.split())) for line in open(sys.argv[1]) if line.strip()]


def t(r, k):
    return "-" if r[k] == "-" else f"{float(r[k]):.3f} s"


def x(r, k, of, unit):
    if r[k] == "-" or r[of] == "-":
        return "-"
    return f"{float(r[k]):.3f} s, **{float(r[k]) / float(r[of]):.2f} × {unit}**"


def antijoin(r):
    if r["antijoin"] == "-":
        return "-"
    a = float(r["antijoin"])
    return f"{a:.3f} s (the sweep takes {float(r['check']) / a:.2f} × it)"


ROWS = [
    ("COPY of both datasets, PostgreSQL", lambda r: t(r, "copy")),
    ("`invariantd check`, PostgreSQL", lambda r: x(r, "check", "copy", "COPY")),
    ("incremental run after 1,000 orders changed", lambda r: x(r, "incr", "check", "the sweep")),
    ("the anti-join in one database", antijoin),
    ("reladiff, the same two key sets", lambda r: x(r, "reladiff", "copy", "COPY")),
    ("COPY of both key-only datasets, PostgreSQL", lambda r: t(r, "ncopy")),
    ("`invariantd check`, key-only, PostgreSQL", lambda r: x(r, "ncheck", "ncopy", "COPY")),
    ("`mariadb --quick --batch` of both datasets", lambda r: t(r, "mycopy")),
    ("`invariantd check`, MariaDB", lambda r: x(r, "mycheck", "mycopy", "mariadb")),
    ("`mariadb --quick --batch`, key-only", lambda r: t(r, "myncopy")),
    ("`invariantd check`, key-only, MariaDB", lambda r: x(r, "myncheck", "myncopy", "mariadb")),
    ("peak RSS of the PostgreSQL check, full / key-only", lambda r: f"{r['rss']} / {r['nrss']} MiB"),
]

print()
print("| | " + " | ".join(f"{int(r['n']):,} orders" for r in runs) + " |")
print("| --- | " + " | ".join("---" for _ in runs) + " |")
for name, cell in ROWS:
    print(f"| {name} | " + " | ".join(cell(r) for r in runs) + " |")
