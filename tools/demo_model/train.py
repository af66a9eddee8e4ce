#!/usr/bin/env python3
"""Trains Tandem's built-in demo model: a small Llama-architecture language model
with its own byte-level BPE tokenizer, on public-domain text from Debian packages.

Run on the GPU machine (PyTorch, tokenizers and transformers installed):
    tools/demo_model/prepare_corpus.sh          # on a Debian machine: writes .demo_corpus/corpus.txt
    python3 tools/demo_model/train.py --corpus .demo_corpus/corpus.txt --out OUT
then, with Tandem's own converter:
    build/bin/tandem-server convert --model OUT/hf --out models/demo/demo-q8_0.gguf --dtype q8_0

Writes OUT/hf (config.json, model.safetensors in BF16, tokenizer.json,
tokenizer_config.json), OUT/heldout.txt (held-out documents, never trained on)
and OUT/report.json (losses, timings, samples).

Held-out loss is measured the way Tandem's `perplexity` command measures it:
the text is tokenized without special tokens and cut into windows of
CONTEXT + 1 tokens that start a fresh context; every token but a window's first
is predicted. The report gives it for the BF16 weights and for the same
weights quantized to Q8_0 (blocks of 32 along each row, scale = max|w| / 127,
stored as f16), which is what the GGUF holds.
"""
import argparse
import json
import math
import os
import random
import time

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

CONTEXT = 512
VOCAB = 8192
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PROMPTS = ["In the beginning", "And the LORD said unto Moses,", "Blessed are the", "A computer is",
           "The best way to"]


def load_documents(path):
    text = open(path, encoding="utf-8").read()
    docs = [d.strip("\n") for d in text.split("<|doc|>")]
    return [d for d in docs if d.strip()]


def split_documents(docs):
    # Deterministic: every 97th document is held out for the report, every
    # 31st (of the rest) validates during training.
    heldout = [d for i, d in enumerate(docs) if i % 97 == 50]
    rest = [d for i, d in enumerate(docs) if i % 97 != 50]
    val = [d for i, d in enumerate(rest) if i % 31 == 7]
    train = [d for i, d in enumerate(rest) if i % 31 != 7]
    return train, val, heldout


def train_tokenizer(docs, out_dir):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "add_bos_token": False, "model_max_length": CONTEXT, "chat_template": CHATML,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    return tok


def encode_stream(tok, docs):
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def windowed_loss(model, ids):
    """Mean next-token NLL over windows of CONTEXT + 1 tokens (see module doc)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, CONTEXT):
            window = ids[start:start + CONTEXT + 1]
            if len(window) < 2:
                break
            x = window[:-1].unsqueeze(0).cuda()
            y = window[1:].cuda()
            logits = model(x).logits[0].float()
            total += F.cross_entropy(logits, y, reduction="sum").item()
            count += len(y)
    return total / count, count


def quantize_q8_0_(model):
    """Rounds every matrix to Q8_0 in place (what the GGUF stores)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() != 2 or p.shape[1] % 32:
                continue
            w = p.float().reshape(p.shape[0], -1, 32)
            d = (w.abs().amax(dim=-1, keepdim=True) / 127.0).half().float()
            q = torch.where(d > 0, torch.round(w / torch.where(d > 0, d, torch.ones_like(d))), torch.zeros_like(w))
            p.copy_((q.clamp(-127, 127) * d).reshape(p.shape).to(p.dtype))


def generate(model, tok, prompt, n=48):
    ids = tok.encode(prompt, add_special_tokens=False).ids
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids[-CONTEXT:]]).cuda()).logits[0, -1]
            ids.append(int(torch.argmax(logits)))
    return tok.decode(ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t_start = time.time()
    hf_dir = os.path.join(args.out, "hf")
    os.makedirs(hf_dir, exist_ok=True)

    docs = load_documents(args.corpus)
    train_docs, val_docs, heldout_docs = split_documents(docs)
    # The committed held-out slice: a few KB of held-out documents.
    heldout_text, picked = "", []
    for d in heldout_docs[::3]:
        if len(heldout_text) > 6000:
            break
        picked.append(d)
        heldout_text = "\n\n".join(picked) + "\n"
    with open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(heldout_text)

    tok = train_tokenizer(train_docs, hf_dir)
    train_ids = encode_stream(tok, train_docs)
    val_ids = encode_stream(tok, val_docs)
    heldout_ids = torch.tensor(tok.encode(heldout_text, add_special_tokens=False).ids, dtype=torch.long)
    print(f"documents train/val/heldout {len(train_docs)}/{len(val_docs)}/{len(heldout_docs)}; "
          f"tokens train {len(train_ids)} val {len(val_ids)} heldout slice {len(heldout_ids)}", flush=True)

    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=384, intermediate_size=1024,
                         num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                         attention_dropout=0.1,
                         max_position_embeddings=CONTEXT, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tok.token_to_id("<|endoftext|>"))
    model = LlamaForCausalLM(config).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = 100

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        p = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    gen = torch.Generator().manual_seed(args.seed)
    history = []
    best = (float("inf"), None, -1)
    t_train = time.time()
    model.train()
    for step in range(args.steps):
        starts = torch.randint(0, len(train_ids) - CONTEXT - 1, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[s:s + CONTEXT + 1] for s in starts]).cuda()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 99 or step == args.steps - 1:
            model.eval()
            val_loss, _ = windowed_loss(model, val_ids[:200000])
            model.train()
            history.append({"step": step + 1, "train_loss": loss.item(), "val_loss": val_loss})
            print(f"step {step + 1} train {loss.item():.4f} val {val_loss:.4f} ({time.time() - t_train:.0f}s)",
                  flush=True)
            if val_loss < best[0]:
                best = (val_loss, {k: v.detach().clone() for k, v in model.state_dict().items()}, step + 1)
    train_seconds = time.time() - t_train
    model.load_state_dict(best[1])
    model.eval()

    # The exported weights are BF16; every loss below is of those weights.
    model = model.to(torch.bfloat16).float()
    heldout_bf16, n_tokens = windowed_loss(model, heldout_ids)
    train_loss, _ = windowed_loss(model, train_ids[:200000])
    samples = {p: generate(model, tok, p) for p in PROMPTS}
    model.to(torch.bfloat16).save_pretrained(hf_dir, safe_serialization=True)
    q8 = LlamaForCausalLM(config).cuda()
    q8.load_state_dict(model.state_dict())
    q8 = q8.float().eval()
    quantize_q8_0_(q8)
    heldout_q8, _ = windowed_loss(q8, heldout_ids)

    report = {
        "parameters": n_params,
        "config": {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                     "num_hidden_layers", "num_attention_heads",
                                                     "num_key_value_heads", "max_position_embeddings")},
        "steps": args.steps, "best_step": best[2], "batch": args.batch, "context": CONTEXT,
        "tokens_seen": args.steps * args.batch * CONTEXT,
        "train_tokens": len(train_ids), "val_tokens": len(val_ids),
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "train_loss_bf16": train_loss, "val_loss_best": best[0],
        "heldout_tokens_predicted": n_tokens, "heldout_loss_bf16": heldout_bf16, "heldout_loss_q8_0": heldout_q8,
        "history": history, "samples": samples,
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k not in ("history",)}, indent=1), flush=True)


if __name__ == "__main__":
    main()
