#!/usr/bin/env python3
"""Self instruction counts per function from a callgrind output file.

callgrind_annotate 3.19 attributed all self cost of a `callgrind_control -d`
dump (taken after `-z`) to `clone` here; this reads the file format directly:
a cost line belongs to the current fn= unless it follows a calls= line (that
one is the callee's inclusive cost).  Usage: cg_self.py FILE [TOP] [REQS]
"""
import re, sys
from collections import defaultdict

path = sys.argv[1]
top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
reqs = int(sys.argv[3]) if len(sys.argv) > 3 else 0
names, obnames = {}, {}
self_cost = defaultdict(int)
fn = ob = None
cur_ob = {}
after_calls = False
total = 0
def resolve(table, value):
    m = re.match(r"\((\d+)\)(?:\s+(.*))?$", value)
    if not m:
        return value
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), value)
with open(path, errors="replace") as f:
    for line in f:
        if not line or line[0] == "\n":
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            if after_calls:
                after_calls = False
                continue
            parts = line.split()
            if len(parts) >= 2 and fn is not None:
                v = int(parts[1])
                self_cost[(fn, cur_ob.get(fn, ob))] += v
                total += v
            continue
        after_calls = False
        if line.startswith("fn="):
            fn = resolve(names, line[3:].strip())
            cur_ob.setdefault(fn, ob)
        elif line.startswith("ob="):
            ob = resolve(obnames, line[3:].strip())
        elif line.startswith("cob="):
            resolve(obnames, line[4:].strip())
        elif line.startswith("cfn="):
            resolve(names, line[4:].strip())
        elif line.startswith("calls="):
            after_calls = True
print(f"total self Ir {total:,}" + (f"  ({total / reqs:,.0f} per request)" if reqs else ""))
for (name, obj), v in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
    per = f"{v / reqs:8,.0f}/req " if reqs else ""
    o = (obj or "?").rsplit("/", 1)[-1]
    print(f"{v:>14,} {100 * v / total:5.1f}% {per} {name[:110]}  [{o}]")
