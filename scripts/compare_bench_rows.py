#!/usr/bin/env python3
"""Matches the rows of two `shmcast-bench --json` runs one to one by their identifying fields,
and reports rows found in only one run and, for matched rows, fields present in only one.

    scripts/compare_bench_rows.py BEFORE.jsonl AFTER.jsonl

Exit status 1 when the sets of rows or of fields differ. Figures are not compared.
"""
import json
import sys

KEY = ("transport", "metric", "side", "size", "method", "reader", "mode", "wait", "recv",
       "batch", "consumers", "parked", "hostile_parked_writer", "paired_size")


def rows(path):
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            row = json.loads(line)
            key = tuple((k, row[k]) for k in KEY if k in row)
            if key in out:
                sys.exit(f"{path}:{n}: two rows with the same identity {dict(key)}")
            out[key] = row
    return out


def main():
    before, after = rows(sys.argv[1]), rows(sys.argv[2])
    ok = True
    for key in before.keys() | after.keys():
        name = ", ".join(f"{k}={v}" for k, v in key)
        if key not in after:
            ok = False
            print(f"only before: {name}")
        elif key not in before:
            ok = False
            print(f"only after:  {name}")
        else:
            b, a = set(before[key]), set(after[key])
            if a != b:
                ok = False
                print(f"fields differ for {name}: before only {sorted(b - a)}, after only {sorted(a - b)}")
    print(f"{len(before)} rows before, {len(after)} after, "
          f"{len(before.keys() & after.keys())} matched one to one"
          + ("; same fields in every matched row" if ok else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
