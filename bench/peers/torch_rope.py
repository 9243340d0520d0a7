"""PyTorch peer for bench/rope_bench.cpp: transformers' rotary embedding as its Llama/Qwen3 code
runs it (cos/sin from inv_freq and positions in f32, cast to bf16, q * cos + rotate_half(q) * sin),
and Qwen3's per-head RMSNorm before it; the same names and byte counts, eager for the prefill
shape and graph-captured for decode shapes, like the mlxn side."""
import json

import torch
import torch.nn.functional as F

from timing import graph_time_us, time_us

PEER = "torch " + torch.__version__


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def main():
    dev = torch.device("cuda")
    d = 128
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, d, 2, device=dev).float() / d))
    for tag, t, h, graph in (("8192x32x128", 8192, 32, False), ("1x32x128", 1, 32, True),
                             ("1x8x128", 1, 8, True)):
        x = torch.randn(t, h, d, device=dev, dtype=torch.bfloat16)
        w = torch.randn(d, device=dev, dtype=torch.bfloat16)
        pos = torch.arange(t, device=dev) + (100000 if t == 1 else 0)

        def rope_fn(v):
            freqs = pos[:, None].float() * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos().to(v.dtype)[:, None, :], emb.sin().to(v.dtype)[:, None, :]
            return v * cos + rotate_half(v) * sin

        nbytes = 2.0 * 2.0 * t * h * d
        cases = [("rope_bf16_" + tag, lambda: rope_fn(x), nbytes),
                 ("rms_norm_rope_bf16_" + tag, lambda: rope_fn(F.rms_norm(x, (d,), w, 1e-6)), nbytes)]
        for name, fn, b in cases:
            us, mode = graph_time_us(fn, 50) if graph else (time_us(fn), "eager")
            print(json.dumps({"name": name, "peer": PEER, "median_us": us, "bytes": b,
                              "GB/s": b / (us * 1e3), "mode": mode}), flush=True)


if __name__ == "__main__":
    main()
