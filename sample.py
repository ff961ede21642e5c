"""
Sample text from the model a train.py run returns, as nanoGPT's sample.py does.

    python sample.py --out_dir=out/cpu --start="def main(" --num_samples=3 --max_new_tokens=100
    python sample.py --out_dir=out/cpu --start=FILE:prompt.txt --model=last

--model=returned (the default) is the model the method returns: the EMA of the weights
for ema and pace runs, the last iterate for adamw. --model=last is the last iterate.
The samples are printed one after another, each beginning with the prompt and followed
by a line of dashes; the same --seed gives the same text.
"""

import argparse
import os
import sys
from contextlib import nullcontext

import torch

import train
from model import GPT, GPTConfig
from prepare_fineweb import first_line, load_tokenizer

MODELS = ("returned", "last")


def load_model(out_dir, which="returned"):
    """The model of the run in out_dir (from its ckpt.pt) on the CPU, in eval mode, and the
    run's Settings. which="returned": what the method returns (the EMA for ema and pace, the
    iterate for adamw); which="last": the last iterate."""
    path = os.path.join(out_dir, "ckpt.pt")
    ckpt = train.load_checkpoint(path)
    cfg = train.load_settings([f"--{key}={value!r}" for key, value in ckpt["config"].items()])
    model = GPT(GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd))
    try:
        model.load_state_dict(ckpt["model"])
        if which == "returned":
            # the optimizer holds the EMA; for adamw (no EMA) eval() leaves the iterate in place
            opt = train.make_optimizer(cfg, model)
            opt.load_state_dict(ckpt["optimizer"])
            opt.eval()
    except (RuntimeError, ValueError, KeyError) as e:
        train.die(f"{path} does not match the config it holds: {first_line(e)}")
    return model.eval(), cfg


def get_device(name):
    """auto: cuda when there is a GPU, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        train.die(f"--device={name} but no CUDA device is available")
    return name


def autocast(device):
    """bfloat16 on the GPU, as in training; float32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()


def read_prompt(start):
    """--start's text, or the contents of the file it names as FILE:path."""
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        train.die(f"--start={start}: cannot read {path}: {first_line(e)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="out", help="the run's folder, holding ckpt.pt (default: %(default)s)")
    parser.add_argument("--model", choices=MODELS, default="returned", help="(default: %(default)s)")
    parser.add_argument("--start", default="\n", help="the prompt, or FILE:path to read it from (default: a newline)")
    parser.add_argument("--num_samples", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="tokens generated per sample (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="< 1: less random, > 1: more (default: %(default)s)")
    parser.add_argument("--top_k", type=int, default=200, help="sample among the k likeliest tokens only (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1337, help="(default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    args = parser.parse_args(argv)
    for key in ("num_samples", "max_new_tokens", "top_k"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be positive, got {args.temperature}")

    model, cfg = load_model(args.out_dir, args.model)
    enc = load_tokenizer()
    prompt = enc.encode(read_prompt(args.start), allowed_special={"<|endoftext|>"})
    if not prompt:
        train.die("--start is empty: the model needs at least one token to continue")
    if max(prompt) >= cfg.vocab_size:
        train.die(f"--start has token {max(prompt)}, outside the model's vocabulary of {cfg.vocab_size}")
    device = get_device(args.device)
    model.to(device)
    x = torch.tensor(prompt, dtype=torch.long, device=device)[None]
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed(args.seed)
    for _ in range(args.num_samples):
        with autocast(device):
            tokens = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)[0]
        # the padding rows of the vocabulary (ids >= 50257) are no text; a barely trained model may sample them
        print(enc.decode([t for t in tokens.tolist() if t < enc.n_vocab]))
        print("---------------")


if __name__ == "__main__":
    sys.exit(main())
