"""PyTorch peer for the decode-attention benchmark: scaled_dot_product_attention in bf16 with one
query token per sequence, timed per SDPA backend (flash, cuDNN, memory-efficient) the same way as
the other peers (CUDA events around each run, warm-up, median), each call captured in a CUDA
graph and replayed (eager time alongside). One JSON object per line; each
case reports its fastest backend, with every backend's median (or error) under "backends"."""
import argparse
import json
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from timing import graph_time_us, sync_quietly, time_us

PEER = "torch " + torch.__version__
SHAPES = [(32, 8, 128), (64, 8, 128), (16, 8, 256), (16, 2, 512)]
BATCHES = [1, 16]
CONTEXTS = [4096, 32768, 131072]
BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
TOL = 2e-2


def run_case(hq, hkv, d, b, ctx):
    dev = torch.device("cuda")
    q = torch.randn(b, hq, 1, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, hkv, ctx, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(b, hkv, ctx, d, device=dev, dtype=torch.bfloat16)
    scale = 1.0 / math.sqrt(d)
    nbytes = 2 * b * hkv * ctx * d * 2
    runs = 20 if b * ctx * hkv * d * 4 > 2e9 else 50
    kx = vx = fn = None  # kx, vx: expanded k/v, built at most once per case, shared by backends
    medians, gqa, outs, modes, eager = {}, {}, {}, {}, {}
    for backend in BACKENDS:
        name = backend.name.lower()
        try:
            with sdpa_kernel([backend]):
                fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False,
                                                            scale=scale, enable_gqa=True)
                outs[name] = fn().float()
                medians[name], modes[name] = graph_time_us(fn, runs)
                eager[name], gqa[name] = time_us(fn, 5, runs), "grouped"
            continue
        except Exception:
            sync_quietly()
        try:
            if kx is None:
                kx = k.repeat_interleave(hq // hkv, dim=1)
                vx = v.repeat_interleave(hq // hkv, dim=1)
            with sdpa_kernel([backend]):
                fn = lambda: F.scaled_dot_product_attention(q, kx, vx, attn_mask=None, is_causal=False,
                                                            scale=scale)
                outs[name] = fn().float()
                medians[name], modes[name] = graph_time_us(fn, runs)
                eager[name], gqa[name] = time_us(fn, 5, runs), "expanded"
        except Exception as e:
            sync_quietly()
            outs.pop(name, None)
            medians[name] = "error: " + str(e)[:120]
    row = {"name": f"decode_{hq}x{hkv}x{d}_b{b}_ctx{ctx}", "peer": PEER}
    timed = [n for n in medians if n in gqa]
    if timed:
        best = min(timed, key=lambda n: medians[n])
        row.update({"backend": best, "gqa": gqa[best], "mode": modes[best], "median_us": medians[best],
                    "eager_us": eager[best], "bytes": nbytes, "GB/s": nbytes / (medians[best] * 1e3)})
    else:
        row.update({"bytes": nbytes, "error": "no backend ran"})
    row["backends"] = medians
    ran = list(outs)
    disagree = [f"{a} vs {c}: {(outs[a] - outs[c]).abs().max().item():.3g}"
                for i, a in enumerate(ran) for c in ran[i + 1:]
                if (outs[a] - outs[c]).abs().max().item() > TOL]
    if disagree:
        row["disagree"] = disagree
    print(json.dumps(row), flush=True)
    del q, k, v, kx, vx, outs, fn


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only 32x8x128, batch 1, ctx 4096 and 32768")
    args = ap.parse_args()
    print(json.dumps({"name": "torch_device", "peer": PEER, "device": torch.cuda.get_device_name(),
                      "cudnn": torch.backends.cudnn.version()}), flush=True)
    shapes, batches, contexts = (SHAPES[:1], [1], CONTEXTS[:2]) if args.quick else (SHAPES, BATCHES, CONTEXTS)
    for hq, hkv, d in shapes:
        for b in batches:
            for ctx in contexts:
                run_case(hq, hkv, d, b, ctx)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
