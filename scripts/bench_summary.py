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
    ap.add_argument("--peer", action="append", default=[])
    args = ap.parse_args()
    peer = {r["name"]: r for path in args.peer for r in load(path)}
    print(f"{'case':34} {'median us':>10} {'GB/s':>8} {'% copy':>7} {'peer us':>9} {'peer/us':>8}")
    matrix = {}  # cases paired with a peer case of another name: one row per peer case
    for path in args.files:
        for r in load(path):
            peer_case = r.get("shape", {}).get("peer_case") if isinstance(r.get("shape"), dict) else None
            if peer_case:
                matrix.setdefault(peer_case, {})[r["shape"]["format"]] = r
                continue
            if "median_us" not in r:
                extra = {k: v for k, v in r.items() if k not in ("name", "shape")}
                print(f"{r['name']:34} " + " ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))
                continue
            name = r["name"]
            if "elements" in r.get("shape", {}) and r["name"].startswith("sequence"):
                name += f"[{r['shape']['elements']}]"
            p = peer.get(r["name"])
            if p and "median_us" not in p:
                p = None
            gbps = f"{r['GB/s']:8.0f}" if "GB/s" in r else " " * 8
            pct = f"{r['pct_of_copy']:6.1f}%" if "pct_of_copy" in r else " " * 7
            pu = f"{p['median_us']:9.1f}" if p else " " * 9
            ratio = f"{p['median_us'] / r['median_us']:8.2f}" if p else " " * 8
            print(f"{name:34} {r['median_us']:10.1f} {gbps} {pct} {pu} {ratio}")
    if matrix:
        formats = list(dict.fromkeys(f for row in matrix.values() for f in row))
        print("speed-up over the peer (peer us / ours), % of copy bandwidth in brackets")
        print(f"{'peer case':32} {'peer us':>8} " + " ".join(f"{f:>13}" for f in formats))
        for case, row in matrix.items():
            p = peer.get(case)
            cells = []
            for f in formats:
                r = row.get(f)
                if not r:
                    cells.append(" " * 13)
                elif p and "median_us" in p:
                    cells.append(f"{p['median_us'] / r['median_us']:6.2f}x ({r.get('pct_of_copy', 0):3.0f}%)")
                else:
                    cells.append(f"{r['median_us']:7.1f}us    ")
            pu = f"{p['median_us']:8.1f}" if p and "median_us" in p else " " * 8
            print(f"{case:32} {pu} " + " ".join(cells))


if __name__ == "__main__":
    main()
