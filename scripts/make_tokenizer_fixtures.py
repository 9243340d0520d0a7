#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/<name>/{tokenizer.json,expected.json} with Hugging Face
`tokenizers`: one small BPE tokenizer per pre-tokenizer family the library supports, trained on
the project's own documentation plus a few lines in other scripts, and the ids `tokenizers` gives
for a fixed list of tricky strings. The C++ tokenizer must reproduce them exactly
(tests/tokenizer). Run where `tokenizers` is installed:  python3 scripts/make_tokenizer_fixtures.py
"""
import glob
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")
VOCAB = 1500

# The split patterns of the tokenizer.json files Llama 3 and Qwen 2 ship.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                  r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Lines in other scripts, so that some merges exist outside ASCII.
EXTRA_TEXT = """
Le cache compressé garde la qualité du modèle, même à très long contexte : café, naïve, résumé.
Der komprimierte Speicher ist schnell und größer als gedacht; Grüße aus Köln.
Сжатый кэш работает быстро, и качество модели сохраняется.
圧縮されたキャッシュは長い文脈でも速い。日本語のテキストです。
压缩缓存在长上下文中也很快。中文测试文本。
Η συμπιεσμένη μνήμη είναι γρήγορη. Ελληνικά κείμενα.
הזיכרון הדחוס מהיר מאוד. עברית.
الذاكرة المضغوطة سريعة جدا. العربية.
संपीड़ित कैश बहुत तेज़ है। हिन्दी पाठ।
Emoji 😀 🎉 👍🏽 🚀 and numbers 1234567890, 3.14159, -42, 1e-5, 0x1F.
"""

TRICKY = [
    "",
    " ",
    "a",
    "\n",
    "Hello world",
    "Hello World! How are you today?",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple   inner    spaces",
    "line one\nline two\n\n\nthree newlines\r\nand a CRLF",
    "tabs\tand\t\ttabs",
    "    indented code line",
    "def f(x):\n    return x ** 2  # squared\n",
    "Numbers: 1234567890 3.14159 -42 1e-5 0x1F 007",
    "can't won't I'm they're we'll it's CAN'T WE'LL",
    "ALLCAPS and MiXeD cAsE",
    "café naïve résumé Grüße",
    "e\u0301 combining accent vs é precomposed",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "日本語のテキスト",
    "中文测试",
    "Ελληνικά κείμενα",
    "Русский текст",
    "עברית",
    "العربية",
    "हिन्दी पाठ",
    "emoji 😀🎉👍🏽 family 👨\u200d👩\u200d👧 flag 🇫🇷",
    "🤖🤖🤖",
    "zero\u200bwidth and non\u00a0breaking",
    "\u2026\u201cquotes\u201d\u2014dashes\u2013and \u2018single\u2019",
    "https://example.com/path?q=1&b=2#frag",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The TurboQuant cache stores keys at 4 bits per element.",
    "special <|endoftext|> inside and <|im_start|>user\nhi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<s>literal</s> and <bos>gemma<eos> <start_of_turn>model\n<end_of_turn>",
    "[INST] What is 2+2? [/INST]",
    "<unk> <0x41> not byte tokens",
    " leading space then\nnewline ",
    "x" + "\n" * 5 + "y" + " " * 7 + "z",
]


def training_text():
    parts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]:
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    parts.append(EXTRA_TEXT * 5)
    return [line for part in parts for line in part.splitlines() if line.strip()]


def byte_level(pre, specials, bos=None, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    return tok, trainer, bos


def gpt2_bytelevel():
    tok, trainer, _ = byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
                                 ["<|endoftext|>"])
    tok.train_from_iterator(training_text(), trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def split_bytelevel(pattern, specials, bos, normalizer=None, ignore_merges=False):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok, trainer, _ = byte_level(pre, specials, ignore_merges=ignore_merges)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.train_from_iterator(training_text(), trainer)
    steps = [processors.ByteLevel(trim_offsets=False)]
    if bos is not None:
        steps.append(processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, tok.token_to_id(bos))]))
    tok.post_processor = processors.Sequence(steps)
    return tok


def llama3_split():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    return split_bytelevel(LLAMA3_PATTERN, specials, "<|begin_of_text|>", ignore_merges=True)


def qwen2_nfc():
    return split_bytelevel(QWEN2_PATTERN, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None,
                           normalizer=normalizers.NFC())


def sentencepiece_style(specials, bos):
    """Byte-fallback BPE trained over Metaspace words, with <0x00>..<0xFF> in the vocabulary
    right after the special tokens (as converted SentencePiece models have them)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials, show_progress=False,
                                  limit_alphabet=200)
    tok.train_from_iterator(training_text(), trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    ordered = specials + [f"<0x{b:02X}>" for b in range(256)]
    rest = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in specials]
    new_vocab = {t: i for i, t in enumerate(ordered + rest)}
    spec["model"]["vocab"] = new_vocab
    for added in spec["added_tokens"]:
        added["id"] = new_vocab[added["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))
    return tok


def llama2_metaspace():
    """Llama 2's tokenizer.json as transformers converts it: no pre-tokenizer, the normalizer
    prepends and replaces spaces, decoders undo it."""
    tok = sentencepiece_style(["<unk>", "<s>", "</s>"], "<s>")
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    spec = json.loads(tok.to_str())
    spec["pre_tokenizer"] = None
    return Tokenizer.from_str(json.dumps(spec))


def mistral_metaspace():
    """Newer SentencePiece-style files: a Metaspace pre-tokenizer (prepend first, no split)."""
    tok = sentencepiece_style(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1", special_tokens=[("<s>", 1)])
    return tok


def gemma_metaspace():
    """Gemma's: spaces replaced by the normalizer, no prefix, <bos> prepended."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tok = sentencepiece_style(specials, "<bos>")
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos>:0 $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1", special_tokens=[("<bos>", 2)])
    return tok


def with_digits(tok):
    """GPT-2 byte level with a Digits pre-tokenizer in front (individual digits)."""
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 tok.pre_tokenizer])
    return tok


FAMILIES = {
    "gpt2_bytelevel": gpt2_bytelevel,
    "llama3_split": llama3_split,
    "qwen2_nfc": qwen2_nfc,
    "llama2_metaspace": llama2_metaspace,
    "mistral_metaspace": mistral_metaspace,
    "gemma_metaspace": gemma_metaspace,
    "digits_bytelevel": lambda: with_digits(gpt2_bytelevel()),
}


def main():
    import tokenizers
    for name, make in FAMILIES.items():
        tok = make()
        cases = []
        for text in TRICKY:
            ids = tok.encode(text, add_special_tokens=False).ids
            with_special = tok.encode(text, add_special_tokens=True).ids
            cases.append({"text": text, "ids": ids, "ids_with_special": with_special,
                          "decoded": tok.decode(ids, skip_special_tokens=False),
                          "decoded_skip_special": tok.decode(with_special, skip_special_tokens=True)})
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
            json.dump({"generator": f"tokenizers {tokenizers.__version__}",
                       "vocab_size": tok.get_vocab_size(with_added_tokens=True), "cases": cases},
                      f, ensure_ascii=False, indent=1)
        print(f"{name}: vocab {tok.get_vocab_size()}, {len(cases)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
