"""
Sample text from the model a train.py run returns, as nanoGPT's sample.py does.

    python sample.py --out_dir=out/demo/pace --start="The os module" --num_samples=3 --max_new_tokens=100
    python sample.py --out_dir=out/demo/pace --start=FILE:prompt.txt --model=last

--model=returned (the default) is the model the method returns: the EMA of the weights
for ema and pace runs, the last iterate for adamw. --model=last is the last iterate.
The samples are printed one after another, each beginning with the prompt and followed
by a line of dashes; the same --seed gives the same text.
"""

import argparse
import sys

import torch

from checkpoint import MODELS, autocast, get_device, load_model
from data import load_tokenizer
from errors import Error, first_line, script_errors


def read_prompt(start):
    """--start's text, or the contents of the file it names as FILE:path."""
    if not start.startswith("FILE:"):
        return start
    path = start[len("FILE:"):]
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Error(f"--start={start}: cannot read {path}: {first_line(e)}")


@script_errors("sample.py")
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
        raise Error("--start is empty: the model needs at least one token to continue")
    if max(prompt) >= cfg.vocab_size:
        raise Error(f"--start has token {max(prompt)}, outside the model's vocabulary of {cfg.vocab_size}")
    device = get_device(args.device)
    model.to(device)
    x = torch.tensor(prompt, dtype=torch.long, device=device)[None]
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed(args.seed)
    for _ in range(args.num_samples):
        with autocast(cfg, device):
            tokens = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k)[0]
        # the padding rows of the vocabulary (ids >= 50257) are no text; a barely trained model may sample them
        print(enc.decode([t for t in tokens.tolist() if t < enc.n_vocab]))
        print("---------------")


if __name__ == "__main__":
    sys.exit(main())
