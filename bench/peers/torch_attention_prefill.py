"""PyTorch peer for the prefill-attention benchmark (bench/attention_prefill_bench.cpp, same case
names in the same order): scaled_dot_product_attention in bf16 on [batch, heads, L, D] tensors,
32 query / 8 kv heads, causal via is_causal=True, timed for the flash and the cuDNN backend each
on its own. GQA is grouped (enable_gqa=True) where the backend takes it, otherwise K/V are
expanded to the query heads with repeat_interleave ("gqa" per backend says which). A backend
that refuses a case (no kernel for it, e.g. head_dim 512) is reported as "unavailable: <why>",
not as an error. Timing as in the other peers (CUDA events around each run, warm-up, median),
each call captured in a CUDA graph and replayed like the mlxn side; eager time alongside for
the cases under 2e11 FLOPs. Runs by FLOPs as in the bench: 50, 20 from 2e11, 10 from 2e12.
One JSON object per line; a case's "median_us" is its fastest backend, every backend's median
(or why it has none) is under "backends"."""
import argparse
import json
import math
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from timing import graph_time_us, sync_quietly, time_us

PEER = "torch " + torch.__version__
HQ, HKV = 32, 8
DIMS = [64, 128, 256, 512]
LENGTHS = [1024, 4096, 16384]
BATCHES = [1, 4]
BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]
EAGER_BELOW_FLOPS = 2e11
TOL = 2e-2  # backends disagree past this fraction of the largest |output|
START = time.monotonic()


def progress(what):
    print(f"{time.monotonic() - START:.1f} s: {what}", file=sys.stderr, flush=True)


def runs_for(flops):
    return 10 if flops >= 2e12 else 20 if flops >= 2e11 else 50


def case_name(d, length, b, causal):
    return f"prefill_{HQ}x{HKV}x{d}_L{length}_b{b}_{'causal' if causal else 'noncausal'}"


def skipped(d, length, b):
    """The cases the bench leaves out (head_dim 512 at 16K is timed at batch 1 only)."""
    return d == 512 and length > 4096 and b > 1


def refusal(caught, err):
    """Why SDPA found no kernel: its warnings name the failed constraints (the headers "... not
    used because:" and the backends switched off by sdpa_kernel left out)."""
    reasons = [str(w.message).split(" (Triggered internally")[0].strip() for w in caught]
    reasons = [r for r in reasons if r and not any(
        s in r for s in ("not used because", "runtime disabled", "No available kernel"))]
    return "; ".join(dict.fromkeys(reasons))[:300] or str(err)[:200]


def run_backend(backend, q, k, v, expanded, causal, scale, runs, eager):
    """Times one backend, grouped first and then expanded. Returns a dict with median_us, gqa,
    mode (eager_us), and out; or with unavailable (every attempt refused) or error."""
    tries = []
    for gqa in ("grouped", "expanded"):
        kk, vv = (k, v) if gqa == "grouped" else expanded()
        extra = {"enable_gqa": True} if gqa == "grouped" else {}
        fn = lambda: F.scaled_dot_product_attention(q, kk, vv, attn_mask=None, is_causal=causal,
                                                    scale=scale, **extra)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with sdpa_kernel([backend]):
                    out = fn()
                    torch.cuda.synchronize()
                    us, mode = graph_time_us(fn, runs)
                    res = {"median_us": us, "gqa": gqa, "mode": mode, "out": out}
                    if eager:
                        res["eager_us"] = time_us(fn, 5, runs)
                return res
            except Exception as e:
                sync_quietly()
                refused = "No available kernel" in str(e)
                tries.append((gqa, refused, refusal(caught, e) if refused else str(e)[:200]))
    whys = list(dict.fromkeys(why for _, _, why in tries))
    why = whys[0] if len(whys) == 1 else " | ".join(f"{g}: {w}" for g, _, w in tries)
    return {"unavailable" if all(refused for _, refused, _ in tries) else "error": why}


def run_case(d, length, b, causal):
    name = case_name(d, length, b, causal)
    flops = 4.0 * length * length * d * HQ * b * (0.5 if causal else 1.0)
    runs = runs_for(flops)
    dev = torch.device("cuda")
    q = torch.randn(b, HQ, length, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, HKV, length, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(b, HKV, length, d, device=dev, dtype=torch.bfloat16)
    scale = 1.0 / math.sqrt(d)
    cache = {}  # K/V expanded to HQ heads, built at most once per case, shared by backends

    def expanded():
        if not cache:
            cache["kv"] = (k.repeat_interleave(HQ // HKV, dim=1),
                           v.repeat_interleave(HQ // HKV, dim=1))
        return cache["kv"]

    backends, gqa, modes, eager, outs = {}, {}, {}, {}, {}
    for backend in BACKENDS:
        bname = backend.name.lower()
        progress(f"{name} {bname}")
        r = run_backend(backend, q, k, v, expanded, causal, scale, runs, flops < EAGER_BELOW_FLOPS)
        if "median_us" in r:
            backends[bname], gqa[bname], modes[bname] = r["median_us"], r["gqa"], r["mode"]
            outs[bname] = r["out"]
            if "eager_us" in r:
                eager[bname] = r["eager_us"]
        elif "unavailable" in r:
            backends[bname] = "unavailable: " + r["unavailable"]
        else:
            backends[bname] = "error: " + r["error"]
    row = {"name": name, "peer": PEER, "flops": flops, "runs": runs}
    if gqa:
        best = min(gqa, key=lambda n: backends[n])
        row.update({"backend": best, "gqa": gqa[best], "mode": modes[best],
                    "median_us": backends[best], "TFLOP/s": flops / (backends[best] * 1e6)})
    elif all(str(x).startswith("unavailable") for x in backends.values()):
        row["unavailable"] = "no backend has a kernel for this case"
    else:
        row["error"] = "no backend ran"
    row.update({"backends": backends, "gqa_by_backend": gqa, "mode_by_backend": modes})
    if eager:
        row["eager_us_by_backend"] = eager
    ran = list(outs)
    for i, a in enumerate(ran):
        if not torch.isfinite(outs[a]).all().item():
            row.setdefault("disagree", []).append(f"{a}: non-finite output")
        for c in ran[i + 1:]:
            diff = (outs[a].float() - outs[c].float()).abs().max().item()
            peak = outs[a].float().abs().max().item()
            if diff > TOL * peak:
                row.setdefault("disagree", []).append(f"{a} vs {c}: {diff:.3g} (peak {peak:.3g})")
    print(json.dumps(row), flush=True)
    del q, k, v, outs, cache


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="only head_dim 128, batch 1, L 1024 and 4096")
    ap.add_argument("only", nargs="?", default="",
                    help="keep only the cases whose name contains this (as the bench's argument)")
    args = ap.parse_args()
    print(json.dumps({"name": "torch_device", "peer": PEER, "device": torch.cuda.get_device_name(),
                      "cudnn": torch.backends.cudnn.version()}), flush=True)
    dims, lengths, batches = ([128], LENGTHS[:2], [1]) if args.quick else (DIMS, LENGTHS, BATCHES)
    for d in dims:
        for length in lengths:
            for b in batches:
                for causal in (True, False):
                    if args.only not in case_name(d, length, b, causal) or skipped(d, length, b):
                        continue
                    run_case(d, length, b, causal)
                    torch.cuda.empty_cache()
    progress("done")


if __name__ == "__main__":
    main()
