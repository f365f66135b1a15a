#!/usr/bin/env python3
"""The DuckDB side of the segment benchmark (bench/src/bin/segments.rs runs it).

Loads the profiles CSV the benchmark wrote into an in-memory DuckDB table (not timed), then
times the count of the segment, with the same conditions as the audience index, in two
natural SQL forms: hobbies as a LIST column (list_contains) and hobbies as a table of
(id, hobby) rows (a semi-join). Prints the figures as one JSON object on stdout.
"""

import argparse
import json
import math
import time

import duckdb


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rank(sorted_values, q):
    """Nearest rank, as the Rust side computes it."""
    i = min(max(math.ceil(q * len(sorted_values)), 1), len(sorted_values)) - 1
    return sorted_values[i]


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def timed(con, sql, warmup, runs):
    for _ in range(warmup):
        con.execute(sql).fetchone()
    times = []
    count = None
    for _ in range(runs):
        t = time.perf_counter()
        (c,) = con.execute(sql).fetchone()
        times.append(time.perf_counter() - t)
        if count is not None and c != count:
            raise SystemExit(f"DuckDB counted {count}, then {c}")
        count = c
    times.sort()
    return count, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gender", required=True)
    ap.add_argument("--city", required=True)
    ap.add_argument("--hobby", required=True)
    ap.add_argument("--from", dest="date_from", required=True, help="first birthday, YYYY-MM-DD")
    ap.add_argument("--to", dest="date_to", required=True, help="last birthday, YYYY-MM-DD")
    a = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    started = time.perf_counter()
    con.execute(
        f"""
        CREATE TABLE profiles AS
        SELECT id, gender, birthday, city,
               CASE WHEN hobbies IS NULL THEN []::VARCHAR[] ELSE string_split(hobbies, ';') END AS hobbies,
               consent
        FROM read_csv({quote(a.csv)}, header = true, delim = ',', quote = '',
                      columns = {{'id': 'BIGINT', 'gender': 'VARCHAR', 'birthday': 'DATE', 'city': 'VARCHAR',
                                  'hobbies': 'VARCHAR', 'consent': 'BOOLEAN'}})
        """
    )
    con.execute("CREATE TABLE profile_hobbies AS SELECT id, unnest(hobbies) AS hobby FROM profiles")
    con.execute("CHECKPOINT")
    load_seconds = time.perf_counter() - started
    (rows,) = con.execute("SELECT count(*) FROM profiles").fetchone()

    common = (
        f"consent AND gender = {quote(a.gender)}"
        f" AND birthday BETWEEN DATE {quote(a.date_from)} AND DATE {quote(a.date_to)}"
        f" AND city = {quote(a.city)}"
    )
    variants = [
        ("hobbies LIST, list_contains", f"SELECT count(*) FROM profiles WHERE {common} AND list_contains(hobbies, {quote(a.hobby)})"),
        (
            "hobbies table, semi-join",
            f"SELECT count(*) FROM profiles WHERE {common}"
            f" AND id IN (SELECT id FROM profile_hobbies WHERE hobby = {quote(a.hobby)})",
        ),
    ]
    out = []
    for name, sql in variants:
        count, times = timed(con, sql, a.warmup, a.runs)
        out.append(
            {
                "name": name,
                "sql": sql,
                "count": count,
                "median_ms": rank(times, 0.5) * 1e3,
                "p95_ms": rank(times, 0.95) * 1e3,
                "min_ms": times[0] * 1e3,
            }
        )
    _, trip = timed(con, "SELECT 1", a.warmup, a.runs)
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone()
    print(
        json.dumps(
            {
                "version": duckdb.__version__,
                "threads": int(threads),
                "rows": rows,
                "load_seconds": load_seconds,
                "rss_mib": rss_mib(),
                "variants": out,
                "roundtrip_median_ms": rank(trip, 0.5) * 1e3,
                "roundtrip_p95_ms": rank(trip, 0.95) * 1e3,
            }
        )
    )


if __name__ == "__main__":
    main()
