#!/usr/bin/env python3
"""Writes tests/fixtures/rope_transformers.json: the RoPE tables Hugging Face transformers computes
for each rope_type (inv_freq, attention scaling, and cos/sin at a few positions), for the CPU tests
of ops/rope.h. Runs where torch and transformers are installed:
    python3 scripts/make_rope_fixture.py OUT.json
"""
import json
import sys

import torch
import transformers
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

POSITIONS = [0, 1, 7, 1000, 4097, 32767, 131071]

# name, head_dim, partial rotary factor, theta, max_position_embeddings, rope scaling (or None),
# seq_len for the dynamic type
CASES = [
    ("default_128", 128, 1.0, 10000.0, 4096, None, None),
    ("default_64_theta1e6", 64, 1.0, 1000000.0, 32768, None, None),
    ("partial_half_256", 256, 0.25, 10000000.0, 262144, None, None),
    ("linear_4", 128, 1.0, 10000.0, 4096, {"rope_type": "linear", "factor": 4.0}, None),
    # The dynamic type re-derives its table in the forward pass from the largest position + 1.
    ("dynamic_2", 128, 1.0, 10000.0, 4096, {"rope_type": "dynamic", "factor": 2.0},
     POSITIONS[-1] + 1),
    ("llama3_8", 128, 1.0, 500000.0, 131072,
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, None),
    ("llama3_32", 64, 1.0, 500000.0, 131072,
     {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, None),
    ("yarn_4", 128, 1.0, 1000000.0, 32768,
     {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0}, None),
]


def make_config(head_dim, partial, theta, max_pos, scaling):
    kw = dict(hidden_size=head_dim * 4, num_attention_heads=4, num_key_value_heads=4,
              head_dim=head_dim, max_position_embeddings=max_pos, partial_rotary_factor=partial)
    params = {"rope_type": "default", "rope_theta": theta}
    if scaling:
        params.update(scaling)
    try:  # transformers >= 5: rope_parameters
        cfg = LlamaConfig(**kw, rope_parameters=params)
        if getattr(cfg, "rope_parameters", None) is None:
            raise TypeError
    except TypeError:
        cfg = LlamaConfig(**kw, rope_theta=theta, rope_scaling=dict(scaling) if scaling else None)
    cfg.partial_rotary_factor = partial
    return cfg


def main():
    out = {"transformers": transformers.__version__, "torch": torch.__version__,
           "positions": POSITIONS, "cases": []}
    for name, head_dim, partial, theta, max_pos, scaling, seq_len in CASES:
        cfg = make_config(head_dim, partial, theta, max_pos, scaling)
        emb = LlamaRotaryEmbedding(config=cfg)
        x = torch.zeros(1, 1, dtype=torch.float32)
        cos, sin = emb(x, torch.tensor([POSITIONS]))
        inv_freq, scale = emb.inv_freq, emb.attention_scaling
        half = inv_freq.numel()
        out["cases"].append({
            "name": name, "head_dim": head_dim, "rotary_dim": 2 * half, "theta": theta,
            "max_position": max_pos, "scaling": scaling, "seq_len": seq_len,
            "inv_freq": [float(v) for v in inv_freq.tolist()],
            "attention_scaling": float(scale),
            "cos": [[float(v) for v in row[:half]] for row in cos[0].tolist()],
            "sin": [[float(v) for v in row[:half]] for row in sin[0].tolist()],
        })
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
