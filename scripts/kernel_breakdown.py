#!/usr/bin/env python3
"""Sums ncu --csv gpu__time_duration.sum rows by kernel name: where a span of launches spends its time."""
import csv, sys, collections, re
rows = list(csv.reader(open(sys.argv[1])))
hdr = None; agg = collections.defaultdict(lambda: [0, 0.0]); total = 0.0
for r in rows:
    if 'Kernel Name' in r: hdr = r; continue
    if not hdr or len(r) != len(hdr): continue
    d = dict(zip(hdr, r))
    if d.get('Metric Name') != 'gpu__time_duration.sum': continue
    name = re.sub(r'\(.*', '', d['Kernel Name'])[:60]
    v = float(d['Metric Value'].replace(',', ''))
    unit = d.get('Metric Unit', '')
    us = v / 1000 if unit in ('nsecond', 'ns') else (v if unit in ('usecond', 'us') else v / 1000)
    agg[name][0] += 1; agg[name][1] += us; total += us
print(f"kernels {sum(a[0] for a in agg.values())}, total {total:.1f} us")
for n, (c, us) in sorted(agg.items(), key=lambda x: -x[1][1])[:25]:
    print(f"{us:9.1f} us {c:5d}x  {n}")
