"""Timing shared by the PyTorch peers: CUDA events around each run, warm-up, median."""
import torch


def time_us(fn, warmup=5, runs=50):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        starts[i].record()
        fn()
        stops[i].record()
    torch.cuda.synchronize()
    us = sorted(1000.0 * a.elapsed_time(b) for a, b in zip(starts, stops))
    return us[len(us) // 2]


def sync_quietly():
    try:
        torch.cuda.synchronize()
    except Exception:
        pass


def graph_time_us(fn, runs):
    """fn timed as a CUDA graph replay, so Python dispatch stays out of the timed region (the mlxn
    side is timed the same way); eager when capture fails. Returns (us, mode)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return time_us(graph.replay, 5, runs), "graph"
    except Exception:
        sync_quietly()
        return time_us(fn, 5, runs), "eager"
