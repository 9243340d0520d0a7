"""PyTorch peer for bench/activations_bench.cpp: the same cases, the same byte counts, timed the
same way. PyTorch has no fused gated activation: F.silu(g) * u runs as two kernels; that is what a
model written in PyTorch pays."""
import json

import torch
import torch.nn.functional as F

from timing import time_us

ROWS, N, VOCAB = 8192, 4096, 151936


def emit(name, us, nbytes):
    print(json.dumps({"name": name, "peer": "torch " + torch.__version__, "median_us": us,
                      "bytes": nbytes, "GB/s": nbytes / (us * 1e3)}), flush=True)


def main():
    dev = torch.device("cuda")
    g = 2.0 * torch.randn(ROWS, N, device=dev, dtype=torch.bfloat16)
    u = torch.randn(ROWS, N, device=dev, dtype=torch.bfloat16)
    fused = 2.0 * torch.randn(ROWS, 2 * N, device=dev, dtype=torch.bfloat16)
    fg, fu = fused[:, :N], fused[:, N:]
    logits = 3.0 * torch.randn(1, VOCAB, device=dev, dtype=torch.float32)
    cap = 30.0
    plane = 2.0 * ROWS * N
    emit("silu_mul_bf16_8192x4096", time_us(lambda: F.silu(g) * u), 3 * plane)
    emit("silu_mul_fused_bf16_8192x4096", time_us(lambda: F.silu(fg) * fu), 3 * plane)
    emit("gelu_tanh_mul_bf16_8192x4096",
         time_us(lambda: F.gelu(g, approximate="tanh") * u), 3 * plane)
    emit("sigmoid_mul_bf16_8192x4096", time_us(lambda: torch.sigmoid(g) * u), 3 * plane)
    emit("softcap_bf16_8192x4096", time_us(lambda: torch.tanh(g / cap) * cap), 2 * plane)
    emit("softmax_bf16_8192x4096", time_us(lambda: torch.softmax(g, dim=-1)), 2 * plane)
    emit("log_softmax_bf16_8192x4096", time_us(lambda: torch.log_softmax(g, dim=-1)), 2 * plane)
    emit("softmax_f32_1x151936", time_us(lambda: torch.softmax(logits, dim=-1)), 2.0 * 4 * VOCAB)


if __name__ == "__main__":
    main()
