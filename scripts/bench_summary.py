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


def print_extra(r, width):
    """A line without timings (a ratio, a note): its name and every field but the shape."""
    extra = {k: v for k, v in r.items() if k not in ("name", "shape")}
    print(f"{r['name']:{width}} " + " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()))


# Peer backends of the prefill cases, as the ratio names print them (ours / theirs in speed).
PREFILL_PEERS = [("flash_attention", "_vs_torch_flash"), ("cudnn_attention", "_vs_torch_cudnn")]


def prefill_cell(p, backend, ours_us):
    """Speed-up over one backend with its µs, n/a where it has no kernel for the case."""
    val = p.get("backends", {}).get(backend) if p else None
    if isinstance(val, (int, float)):
        return f"{val / ours_us:6.2f}x ({val:.1f})"
    if val is None:
        return ""
    return "n/a" if str(val).startswith("unavailable") else "error"


def print_prefill(rows, peer):
    print("prefill attention: TFLOP/s; speed-up over each PyTorch SDPA backend (its us / ours), "
          "its us in brackets; n/a: it has no kernel for the case")
    print(f"{'case':46} {'median us':>10} {'TFLOP/s':>8} " +
          " ".join(f"{label:>20}" for _, label in PREFILL_PEERS))
    for r in rows:
        if "median_us" not in r:
            print_extra(r, 46)
            continue
        p = peer.get(r["name"])
        tflops = f"{r['TFLOP/s']:8.1f}" if "TFLOP/s" in r else " " * 8
        cells = " ".join(f"{prefill_cell(p, b, r['median_us']):>20}" for b, _ in PREFILL_PEERS)
        print(f"{r['name']:46} {r['median_us']:10.1f} {tflops} {cells}".rstrip())


def print_model(rows):
    print("model decode (one token per sequence, argmax and read-back included) and prefill")
    print(f"{'case':52} {'median us':>10} {'tokens/s':>9} {'roofline':>9}")
    for r in rows:
        sh = r.get("shape", {})
        roof = f"{100 * sh['roofline_us'] / r['median_us']:8.1f}%" if "roofline_us" in sh else " " * 9
        print(f"{r['name']:52} {r['median_us']:10.1f} {sh.get('tokens_per_s', 0):9.1f} {roof}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--peer", action="append", default=[])
    args = ap.parse_args()
    peer = {r["name"]: r for path in args.peer for r in load(path)}
    print(f"{'case':34} {'median us':>10} {'GB/s':>8} {'% copy':>7} {'peer us':>9} {'peer/us':>8}")
    matrix = {}  # cases paired with a peer case of another name: one row per peer case
    prefill = []  # prefill attention: TFLOP/s and a ratio per PyTorch SDPA backend
    model = []  # whole-model decode and prefill: tokens/s and % of the roofline
    for path in args.files:
        for r in load(path):
            peer_case = r.get("shape", {}).get("peer_case") if isinstance(r.get("shape"), dict) else None
            if peer_case:
                matrix.setdefault(peer_case, {})[r["shape"]["format"]] = r
                continue
            if r["name"].startswith("prefill_"):
                prefill.append(r)
                continue
            if r["name"].startswith("model_"):
                model.append(r)
                continue
            if "median_us" not in r:
                print_extra(r, 34)
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
    if prefill:
        print_prefill(prefill, peer)
    if model:
        print_model(model)


if __name__ == "__main__":
    main()
