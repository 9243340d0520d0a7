#!/usr/bin/env python3
"""Trains the embedded default model (models/tiny-stories): a Llama-architecture model of about
6.4 M parameters with its own byte-level BPE tokenizer, on short stories this script generates
from a small grammar (so the training text is the project's own and may be redistributed).

Runs on one GPU in well under ten minutes (PyTorch, transformers and tokenizers needed):
    python3 scripts/train_tiny_model.py OUT_DIR [--seconds 300]
Writes OUT_DIR/hf (config.json, model.safetensors in bf16, generation_config.json,
tokenizer.json, tokenizer_config.json), OUT_DIR/loss.csv (step, tokens, train loss, validation
loss), OUT_DIR/samples.txt and OUT_DIR/summary.json. `mlxn convert OUT_DIR/hf models/tiny-stories
-q --bits 4` then makes the MLX 4-bit model the repository ships (the validation loss of that
quantization, simulated here with min-max rounding, is in summary.json).
"""
import argparse
import csv
import json
import math
import os
import random
import sys
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM

# ---- the story grammar ---------------------------------------------------------------------------
GIRLS = ["Lily", "Mia", "Anna", "Lucy", "Zoe", "Ella", "Nora", "Ruby", "Ivy", "Rosa"]
BOYS = ["Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Finn", "Oscar", "Hugo", "Theo"]
ANIMALS = ["cat", "dog", "rabbit", "fox", "bird", "bear", "mouse", "duck", "frog", "owl", "turtle",
           "squirrel", "horse", "lamb", "pig", "goat"]
PLACES = ["a small house", "a big forest", "a quiet village", "a green farm", "a sunny town",
          "a little boat", "a tall tree", "a warm cave", "a busy city", "a garden full of flowers"]
LANDMARKS = ["river", "hill", "lake", "old bridge", "big rock", "sea", "park", "mountain"]
ACTIVITIES = ["play with a red ball", "sing songs", "run in the grass", "draw pictures",
              "look at the stars", "climb trees", "read books", "jump in puddles", "pick berries",
              "build towers of sand", "fly a kite", "dance in the rain", "count the clouds",
              "splash in the water", "help in the kitchen"]
ADJS = ["shiny", "tiny", "big", "soft", "old", "strange", "pretty", "blue", "golden", "broken",
        "magic", "heavy", "funny", "bright"]
OBJECTS = ["key", "box", "stone", "hat", "shell", "map", "feather", "cup", "bell", "ring", "book",
           "kite", "lamp", "coin", "flower", "egg"]
WHERE = ["under a bush", "near the river", "in the sand", "behind the door", "on the path",
         "in a hole", "by the old tree", "under the bed", "in the grass", "on a high shelf"]
FEELINGS = ["happy", "sad", "scared", "excited", "curious", "surprised", "tired", "proud", "brave"]
PROBLEMS = [
    ("the {obj} fell into the water", "pulled it out with a long stick"),
    ("a strong wind blew the {obj} away", "ran after it until it stopped"),
    ("the {obj} was stuck in a tree", "climbed up and got it down"),
    ("it started to rain very hard", "found a dry place to wait"),
    ("the {obj} was too heavy to carry", "carried it together, step by step"),
    ("{pro} could not find the way home", "followed the river back home"),
    ("a big dog barked at them", "walked away slowly and calmly"),
    ("the {obj} broke into two pieces", "fixed it with some glue"),
]
FRIENDS = ["mom", "dad", "grandma", "grandpa", "a kind old man", "a little bird", "a wise owl",
           "a friendly bear", "a new friend", "the big sister", "the little brother"]
MORALS = ["friends help each other", "it is good to share", "being brave is not the same as not "
          "being scared", "kindness makes everyone happy", "it is good to ask for help",
          "patience pays off", "every day can be an adventure", "home is the best place"]
ENDINGS = ["The end.", "And they all went home happy.", "From that day on, {name} was never "
           "{feeling} again.", "Then {name} went to sleep with a big smile.",
           "{name} kept the {obj} forever."]
SAYS = ["said", "asked", "shouted", "whispered", "cried", "laughed"]
QUOTES = ["Look at this!", "What is it?", "Can you help me?", "This is so much fun!",
          "I want to keep it.", "Let us go home.", "Thank you so much!", "I am not scared.",
          "Where did it go?", "We did it!"]


def quote(rng: random.Random) -> str:
    q = rng.choice(QUOTES)
    return q[:-1] + "," if q.endswith(".") else q


def story(rng: random.Random) -> str:
    girl = rng.random() < 0.5
    name = rng.choice(GIRLS if girl else BOYS)
    kind = rng.choice(ANIMALS + ["girl" if girl else "boy"] * 4)
    pro = "she" if girl else "he"
    Pro = pro.capitalize()
    obj, adj = rng.choice(OBJECTS), rng.choice(ADJS)
    a_adj = ("an " if adj[0] in "aeiou" else "a ") + adj
    friend = rng.choice(FRIENDS)
    feeling = rng.choice(FEELINGS)
    problem, fix = rng.choice(PROBLEMS)
    problem = problem.format(obj=obj, pro=pro)
    s = []
    a_kind = ("an " if kind[0] in "aeiou" else "a ") + kind
    opening = rng.choice(["Once upon a time, there was a little {kind} named {name}.",
                          "In the morning, {a_kind} named {name} woke up early.",
                          "There was once {a_kind} called {name}.",
                          "{name} was a little {kind} who loved to {act}."])
    act = rng.choice(ACTIVITIES)
    s.append(opening.format(kind=kind, a_kind=a_kind, name=name, act=act))
    s.append(f"{Pro} lived in {rng.choice(PLACES)} near the {rng.choice(LANDMARKS)}.")
    if rng.random() < 0.7:
        s.append(f"Every day, {name} liked to {rng.choice(ACTIVITIES)}.")
    s.append(f"One day, {name} found {a_adj} {obj} {rng.choice(WHERE)}.")
    s.append(f"\"{quote(rng)}\" {name} {rng.choice(SAYS)}.")
    s.append(f"{name} felt very {feeling}.")
    if rng.random() < 0.5:
        s.append(f"{Pro} showed the {obj} to {friend}.")
    s.append(f"But then {problem}.")
    s.append(f"{name} asked {friend} for help, and together they {fix}.")
    s.append(f"\"{quote(rng)}\" {rng.choice(SAYS)} {friend}.")
    s.append(f"In the end, {name} learned that {rng.choice(MORALS)}.")
    s.append(rng.choice(ENDINGS).format(name=name, feeling=rng.choice(["sad", "scared", "lonely"]),
                                        obj=obj))
    return " ".join(s)


# ---- tokenizer ---------------------------------------------------------------------------------
def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 0)])
    return tok


# ---- affine 4-bit, group 64 (min-max scale and bias per group, as MLX's format stores them), to
# estimate what the shipped 4-bit model loses; MLX's exact rounding differs in detail -----------------
def affine_roundtrip(w: torch.Tensor, bits=4, group=64) -> torch.Tensor:
    g = w.float().reshape(-1, group)
    wmax, wmin = g.max(dim=1, keepdim=True).values, g.min(dim=1, keepdim=True).values
    levels = (1 << bits) - 1
    scale = ((wmax - wmin) / levels).clamp_min(1e-7).to(torch.bfloat16).float()
    bias = wmin.to(torch.bfloat16).float()
    q = torch.clamp(torch.round((g - bias) / scale), 0, levels)
    return (q * scale + bias).reshape(w.shape).to(w.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=300.0, help="training wall time")
    ap.add_argument("--stories", type=int, default=400_000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    os.makedirs(os.path.join(args.out, "hf"), exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.time()

    rng = random.Random(args.seed)
    stories = [story(rng) for _ in range(args.stories)]
    val_stories = [story(random.Random(args.seed + 1 + i)) for i in range(2000)]
    tok = train_tokenizer(stories[:50_000], 2048)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    print(f"stories generated and tokenizer trained in {time.time() - t0:.1f} s", file=sys.stderr)

    def pack(texts):
        ids = []
        for e in tok.encode_batch(texts):
            ids.extend(e.ids)  # <s> story (the template adds <s>)
            ids.append(eos)
        return torch.tensor(ids, dtype=torch.int32)

    train_ids, val_ids = pack(stories), pack(val_stories)
    print(f"{train_ids.numel() / 1e6:.1f} M training tokens, {val_ids.numel() / 1e3:.0f} K "
          f"validation tokens ({time.time() - t0:.1f} s)", file=sys.stderr)

    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=704,
                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-5,
                         rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=bos,
                         eos_token_id=eos, attention_bias=False, mlp_bias=False)
    device = torch.device("cuda")
    model = LlamaForCausalLM(config).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters", file=sys.stderr)

    seq, batch = 256, 256
    train_ids, val_ids = train_ids.to(device), val_ids.to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.95), fused=True)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def batch_of(ids, n):
        starts = torch.randint(0, ids.numel() - seq - 1, (n,), device=device, generator=gen)
        idx = starts[:, None] + torch.arange(seq + 1, device=device)[None, :]
        chunk = ids[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    @torch.no_grad()
    def validation_loss(m):
        m.eval()
        losses = []
        vgen = torch.Generator(device=device).manual_seed(7)
        for _ in range(8):
            starts = torch.randint(0, val_ids.numel() - seq - 1, (64,), device=device,
                                   generator=vgen)
            idx = starts[:, None] + torch.arange(seq + 1, device=device)[None, :]
            chunk = val_ids[idx].long()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = m(input_ids=chunk[:, :-1]).logits.float()
            losses.append(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1)).item())
        m.train()
        return sum(losses) / len(losses)

    # Steps: timed over steps 10-30 (past the first launches' set-up), then as many as fit in the
    # time budget (the cosine schedule needs the total).
    warmup, total = 100, None
    rows = []
    step, t_train, t_10 = 0, time.time(), 0.0
    model.train()
    while total is None or step < total:
        if step == 10:
            torch.cuda.synchronize()
            t_10 = time.time()
        if step == 30:
            torch.cuda.synchronize()
            per_step = (time.time() - t_10) / 20
            total = max(200, int((args.seconds - (t_10 - t_train)) / per_step))
            print(f"{per_step * 1e3:.1f} ms/step -> {total} steps", file=sys.stderr)
        horizon = total or 10_000
        lr = 2e-3 * min(1.0, (step + 1) / warmup) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / horizon))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch_of(train_ids, batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0 or step == 1 or step == total:
            v = validation_loss(model) if (step % 500 == 0 or step == total or step == 1) else ""
            rows.append((step, step * batch * seq, round(loss.item(), 4),
                         round(v, 4) if v != "" else ""))
            print(f"step {step} loss {loss.item():.3f} val {v} ({time.time() - t_train:.0f} s)",
                  file=sys.stderr)
    train_s = time.time() - t_train

    final_val = validation_loss(model)
    quantized = LlamaForCausalLM(config).to(device)
    quantized.load_state_dict(model.state_dict())
    with torch.no_grad():
        for n, p in quantized.named_parameters():
            if p.dim() == 2 and p.shape[1] % 64 == 0:
                p.copy_(affine_roundtrip(p))
    quantized_val = validation_loss(quantized)

    hf = os.path.join(args.out, "hf")
    model.to(torch.bfloat16).save_pretrained(hf, safe_serialization=True)
    tok.save(os.path.join(hf, "tokenizer.json"))
    with open(os.path.join(hf, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                   "eos_token": "</s>", "model_max_length": 1024}, f, indent=1)
    with open(os.path.join(args.out, "loss.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "tokens", "train_loss", "validation_loss"])
        w.writerows(rows)

    # Samples from the bf16 model with transformers (the reference the C++ runner is checked
    # against elsewhere): greedy and sampled continuations of a few openings.
    model.eval()
    samples = []
    for prompt in ["Once upon a time", "One day, a fox named Leo", "Mia found a"]:
        ids = torch.tensor([tok.encode(prompt).ids], device=device)
        for sample in (False, True):
            out = model.generate(ids, max_new_tokens=120, do_sample=sample, temperature=0.8,
                                 top_k=0 if not sample else 40, eos_token_id=eos, pad_token_id=eos)
            samples.append(f"[{'sampled t=0.8 top-k 40' if sample else 'greedy'}] "
                           f"{tok.decode(out[0].tolist(), skip_special_tokens=True)}")
    with open(os.path.join(args.out, "samples.txt"), "w") as f:
        f.write("\n\n".join(samples) + "\n")
    summary = {"parameters": params, "steps": step, "batch": batch, "seq": seq,
               "tokens_seen": step * batch * seq, "train_seconds": round(train_s, 1),
               "validation_loss_bf16": round(final_val, 4),
               "validation_loss_affine4_simulated": round(quantized_val, 4),
               "vocab": tok.get_vocab_size(), "stories": args.stories,
               "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary), file=sys.stderr)
    print("\n".join(samples[:2]), file=sys.stderr)


if __name__ == "__main__":
    main()
