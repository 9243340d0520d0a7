#!/usr/bin/env python3
"""Prints a short table from bench/ JSON lines, paired with a peer's lines of the same name."""
import argparse
import json


def load(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    except FileNotFoundError:
        pass
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--peer")
    args = ap.parse_args()
    peer = {r["name"]: r for r in load(args.peer)} if args.peer else {}
    print(f"{'case':34} {'median us':>10} {'GB/s':>8} {'% copy':>7} {'peer us':>9} {'peer/us':>8}")
    for path in args.files:
        for r in load(path):
            if "median_us" not in r:
                extra = {k: v for k, v in r.items() if k not in ("name", "shape")}
                print(f"{r['name']:34} " + " ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))
                continue
            name = r["name"]
            if "elements" in r.get("shape", {}) and r["name"].startswith("sequence"):
                name += f"[{r['shape']['elements']}]"
            p = peer.get(r["name"])
            gbps = f"{r['GB/s']:8.0f}" if "GB/s" in r else " " * 8
            pct = f"{r['pct_of_copy']:6.1f}%" if "pct_of_copy" in r else " " * 7
            pu = f"{p['median_us']:9.1f}" if p else " " * 9
            ratio = f"{p['median_us'] / r['median_us']:8.2f}" if p else " " * 8
            print(f"{name:34} {r['median_us']:10.1f} {gbps} {pct} {pu} {ratio}")


if __name__ == "__main__":
    main()
