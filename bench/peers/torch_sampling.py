"""PyTorch peer for bench/sampling_bench.cpp: the transformers warpers' arithmetic (temperature,
top-k by torch.topk, top-p by sort + cumsum, min-p) then torch.multinomial, and torch.argmax;
151936-entry f32 logits, batch 1 and 16, the same names and byte counts. Timed eagerly (the
generator state of multinomial does not replay in a captured graph without extra setup)."""
import json

import torch

from timing import time_us

PEER = "torch " + torch.__version__
VOCAB = 151936
MODES = [("argmax", 0.0, 0, 1.0, 0.0), ("temperature", 0.7, 0, 1.0, 0.0),
         ("top_k50", 0.7, 50, 1.0, 0.0), ("top_p0.9", 0.7, 0, 0.9, 0.0),
         ("min_p0.05", 0.7, 0, 1.0, 0.05), ("top_k20_top_p0.8", 0.7, 20, 0.8, 0.0)]


def warp_and_sample(logits, temperature, top_k, top_p, min_p):
    scores = logits / temperature
    if top_k > 0:
        kth = torch.topk(scores, top_k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - top_p)
        remove_sorted[..., -1:] = 0
        remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    if min_p > 0.0:
        probs = torch.softmax(scores, dim=-1)
        top = probs.amax(dim=-1, keepdim=True)
        scores = scores.masked_fill(probs < min_p * top, -float("inf"))
    return torch.multinomial(torch.softmax(scores, dim=-1), 1)


def main():
    dev = torch.device("cuda")
    for batch in (1, 16):
        logits = torch.randn(batch, VOCAB, device=dev, dtype=torch.float32) * 3.0
        for tag, t, k, p, m in MODES:
            name = f"sample_{tag}_f32_b{batch}_v{VOCAB}"
            if t == 0.0:
                fn = lambda: torch.argmax(logits, dim=-1)
            else:
                fn = lambda: warp_and_sample(logits, t, k, p, m)
            us = time_us(fn, 10, 200)
            b = 4.0 * batch * VOCAB
            print(json.dumps({"name": name, "peer": PEER, "median_us": us, "bytes": b,
                              "GB/s": b / (us * 1e3), "mode": "eager"}), flush=True)


if __name__ == "__main__":
    main()
