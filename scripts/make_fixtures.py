#!/usr/bin/env python3
"""Builds the golden model fixtures of tests/fixtures/models: tiny random-weight models of each
supported architecture, saved as Hugging Face checkpoints (config.json + model.safetensors, bf16
weights), and the logits transformers computes for a prompt and 16 greedy decode steps.
Runs where torch, transformers and safetensors are installed:
    python3 scripts/make_fixtures.py OUT_DIR
and writes OUT_DIR/<name>/{config.json, model.safetensors, golden.safetensors}.

golden.safetensors holds
    tokens      i32 [L + G]  the prompt (L tokens) followed by G = 16 greedy tokens of the f32 model
    prompt_len  i32 [1]      L
    logits      f32 [L + G, vocab]  f32 forward pass: row i predicts token i + 1
    logits_bf16 f32 [L + G, vocab]  the same sequence through the model in bf16 (the scale of bf16
                                    rounding error, from which the GPU tests derive tolerances)
Every weight is random (norm weights and biases too, so that a missing multiply shows) and rounded
to bf16 before the f32 pass, so the f32 logits are exactly those of the stored weights. A seed is
kept only when each greedy step's margin (top-1 minus top-2 logit) exceeds MARGIN_RATIO times the
bf16 pass's largest deviation on that row, so that a correct bf16 implementation reproduces the
greedy tokens.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

PROMPT_LEN = 21  # not a multiple of any tile, longer than the sliding windows below
GENERATED = 16
VOCAB = 256
# Each greedy step's margin must exceed this many times the bf16 pass's largest deviation on
# that row of logits.
MARGIN_RATIO = 3.0

COMMON = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
              head_dim=64, rms_norm_eps=1e-6, max_position_embeddings=256,
              attn_implementation="eager")


def models():
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                              LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)
    return [
        # Llama 3.x: llama3 rope scaling, GQA 2, untied head.
        ("llama", LlamaForCausalLM, LlamaConfig(
            **COMMON, num_attention_heads=2, num_key_value_heads=1, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            tie_word_embeddings=False)),
        # Mistral: every layer a sliding window of 8 (the prompt is longer).
        ("mistral", MistralForCausalLM, MistralConfig(
            **COMMON, num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
            rope_theta=10000.0, tie_word_embeddings=False)),
        # Qwen2: q/k/v biases, tied embeddings.
        ("qwen2", Qwen2ForCausalLM, Qwen2Config(
            **COMMON, num_attention_heads=4, num_key_value_heads=1, rope_theta=1000000.0,
            tie_word_embeddings=True, use_sliding_window=False)),
        # Qwen3: per-head q/k RMSNorm, GQA 4.
        ("qwen3", Qwen3ForCausalLM, Qwen3Config(
            **COMMON, num_attention_heads=4, num_key_value_heads=1, rope_theta=1000000.0,
            tie_word_embeddings=False, attention_bias=False)),
        # Gemma 3: a sliding layer (window 8, local theta) then a global one (linear scaling),
        # four (1 + w) norms, GeGLU, scaled and tied embeddings, both soft-caps.
        ("gemma3", Gemma3ForCausalLM, Gemma3TextConfig(
            **COMMON, num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
            layer_types=["sliding_attention", "full_attention"], sliding_window_pattern=2,
            rope_theta=1000000.0,
            rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
            query_pre_attn_scalar=64, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)),
    ]


def randomize(model, arch, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight") or "layernorm" in name:
                # Gemma applies 1 + w: random w around 0; the others multiply: around 1.
                value = 0.2 * noise if arch == "gemma3" else 1.0 + 0.2 * noise
            elif name.endswith("bias"):
                value = 0.2 * noise
            elif "embed_tokens" in name or "lm_head" in name:
                value = 0.5 * noise
            else:
                value = 0.08 * noise
            p.copy_(value.to(torch.bfloat16).to(torch.float32))


def all_logits(model, tokens, dtype):
    model = model.to(dtype)
    with torch.no_grad():
        out = model(torch.tensor([tokens]), use_cache=False).logits[0].float()
    return out


def build(name, cls, config, out_dir):
    for seed in range(1, 400):
        torch.manual_seed(seed)
        model = cls(config).eval()
        randomize(model, name, seed)
        model = model.float()
        g = torch.Generator().manual_seed(1000 + seed)
        tokens = torch.randint(0, VOCAB, (PROMPT_LEN,), generator=g).tolist()
        for _ in range(GENERATED):  # greedy, the whole sequence each step (no cache to trust)
            tokens.append(int(all_logits(model, tokens, torch.float32)[-1].argmax()))
        logits = all_logits(model, tokens, torch.float32)
        logits_bf16 = all_logits(model, tokens, torch.bfloat16)
        model = model.float()
        bf16_dev = float((logits_bf16 - logits).abs().max())
        rows = slice(PROMPT_LEN - 1, PROMPT_LEN - 1 + GENERATED)
        steps = logits[rows]
        top2 = steps.topk(2, dim=-1).values
        margins = top2[:, 0] - top2[:, 1]
        row_dev = (logits_bf16[rows] - steps).abs().amax(dim=-1)
        ratio = float((margins / row_dev).min())
        margin = float(margins.min())
        same = all(int(steps[i].argmax()) == tokens[PROMPT_LEN + i] for i in range(GENERATED))
        print(f"{name} seed {seed}: min greedy margin {margin:.4f}, bf16 deviation "
              f"{bf16_dev:.4f}, min margin / row deviation {ratio:.2f}", file=sys.stderr)
        if same and ratio > MARGIN_RATIO:
            break
    else:
        raise RuntimeError(f"{name}: no seed gives greedy margins above the bf16 deviation")
    path = os.path.join(out_dir, name)
    os.makedirs(path, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(path, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(path, extra)):
            os.remove(os.path.join(path, extra))
    save_file({
        "tokens": torch.tensor(tokens, dtype=torch.int32),
        "prompt_len": torch.tensor([PROMPT_LEN], dtype=torch.int32),
        "logits": logits.contiguous(),
        "logits_bf16": logits_bf16.contiguous(),
    }, os.path.join(path, "golden.safetensors"))
    return {"name": name, "seed": seed, "margin": margin, "margin_ratio": ratio, "bf16_deviation": bf16_dev,
            "logit_absmax": float(logits.abs().max())}


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", file=sys.stderr)
    summary = []
    failed = False
    for name, cls, config in models():
        try:
            summary.append(build(name, cls, config, out_dir))
        except Exception as e:  # keep the other models
            failed = True
            print(f"{name}: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    print(json.dumps({"transformers": transformers.__version__, "models": summary}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
