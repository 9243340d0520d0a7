"""PyTorch peer for bench/norms_bench.cpp: the same four normalisations of 8192 x 4096 bf16, the
same byte counts, timed the same way. add_rms_norm is PyTorch's unfused x + r then rms_norm."""
import json

import torch
import torch.nn.functional as F

from timing import time_us

ROWS, N = 8192, 4096


def emit(name, us, nbytes):
    print(json.dumps({"name": name, "peer": "torch " + torch.__version__, "median_us": us,
                      "bytes": nbytes, "GB/s": nbytes / (us * 1e3)}), flush=True)


def main():
    dev = torch.device("cuda")
    x = torch.randn(ROWS, N, device=dev, dtype=torch.bfloat16)
    r = torch.randn(ROWS, N, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, device=dev, dtype=torch.bfloat16)
    plane = 2.0 * ROWS * N
    emit("rms_norm_bf16_8192x4096", time_us(lambda: F.rms_norm(x, (N,), w, 1e-6)), 2 * plane)
    emit("add_rms_norm_bf16_8192x4096", time_us(lambda: F.rms_norm(x + r, (N,), w, 1e-6)), 4 * plane)
    emit("layer_norm_bf16_8192x4096", time_us(lambda: F.layer_norm(x, (N,), w, b, 1e-5)), 2 * plane)
    emit("l2_norm_bf16_8192x4096", time_us(lambda: F.normalize(x, dim=-1)), 2 * plane)


if __name__ == "__main__":
    main()
