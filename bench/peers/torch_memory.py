"""PyTorch peer for bench/memory_bench.cpp: the same cases, shapes and byte counts, timed the same
way (CUDA events around each run, warm-up, median of 50). One JSON object per line, names equal
to the mlxn cases so scripts/bench_summary.py can pair them."""
import json

import torch

from timing import time_us

N = 1 << 28
SIDE = 16384


def emit(name, us, nbytes):
    print(json.dumps({"name": name, "peer": "torch " + torch.__version__, "median_us": us,
                      "bytes": nbytes, "GB/s": nbytes / (us * 1e3)}), flush=True)


def main():
    dev = torch.device("cuda")
    src = torch.randn(N, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    emit("device_copy", time_us(lambda: dst.copy_(src)), 8.0 * N)
    half = src.to(torch.bfloat16)
    emit("cast_f32_bf16", time_us(lambda: half.copy_(src)), 6.0 * N)
    emit("cast_bf16_f32", time_us(lambda: dst.copy_(half)), 6.0 * N)
    fp8 = torch.empty(N, device=dev, dtype=torch.float8_e4m3fn)
    emit("cast_bf16_f8e4m3", time_us(lambda: fp8.copy_(half)), 3.0 * N)
    emit("fill_f32", time_us(lambda: dst.fill_(1.0)), 4.0 * N)
    emit("fill_random_normal_f32", time_us(lambda: dst.normal_()), 4.0 * N)
    a = torch.randn(N, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, device=dev, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    emit("add_bf16", time_us(lambda: torch.add(a, b, out=c)), 6.0 * N)
    emit("scale_bf16", time_us(lambda: torch.mul(a, 0.5, out=c)), 4.0 * N)
    sq = a[: SIDE * SIDE].view(SIDE, SIDE)
    tr = c[: SIDE * SIDE].view(SIDE, SIDE)
    emit("copy_transpose_bf16", time_us(lambda: tr.copy_(sq.t()), 2, 10), 4.0 * SIDE * SIDE)


if __name__ == "__main__":
    main()
