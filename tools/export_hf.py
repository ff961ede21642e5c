"""
Export the model a train.py run returns as a Hugging Face GPT-2, with GPT-2's tokenizer.

    python -m tools.export_hf --out_dir=out/demo/pace --hf_dir=hf/demo-pace [--model=returned|last]

hf_dir then holds a GPT2LMHeadModel (config.json, model.safetensors; the vocabulary cut
from the padded 50,304 rows to GPT-2's 50,257 tokens) and the tokenizer files, written
offline from tiktoken's GPT-2 encoding, so that

    AutoModelForCausalLM.from_pretrained(hf_dir), AutoTokenizer.from_pretrained(hf_dir)

load it without a network. Needs transformers and safetensors (pip install transformers).
"""

import argparse
import json
import os
import shutil
import sys

from checkpoint import MODELS, load_model
from model import CONV1D_WEIGHTS, GPT2_VOCAB_SIZE
from data import load_tokenizer
from errors import Error, script_errors


def hf_gpt2(model, vocab_size):
    """A transformers GPT2LMHeadModel that computes what model computes, for token ids below
    vocab_size (the rows of the embedding from vocab_size on are dropped)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    c = model.config
    assert c.bias and vocab_size <= c.vocab_size
    config = GPT2Config(vocab_size=vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, activation_function="gelu_new",  # GELU's tanh approximation
                        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default
                        bos_token_id=GPT2_VOCAB_SIZE - 1, eos_token_id=GPT2_VOCAB_SIZE - 1,
                        tie_word_embeddings=True)
    state = {}
    for name, tensor in model.state_dict().items():  # nanoGPT kept Hugging Face's names
        if name == "lm_head.weight":
            continue  # tied to the token embedding in both
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab_size]
        state[name] = tensor.contiguous()
    hf = GPT2LMHeadModel(config).to(next(model.parameters()).dtype)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    hf.tie_weights()
    return hf.eval()


def bpe_merges(ranks):
    """The merges of a byte-level BPE from its token ranks, in rank order: each multi-byte
    token is the merge of the two parts that BPE with the merges ranked below it leaves."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while True:
            pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            lowest, i = min(pairs)
            if lowest >= rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        assert len(parts) == 2, token
        merges.append(parts)
    return merges


def write_tokenizer(enc, hf_dir, max_length):
    """GPT-2's tokenizer files from tiktoken's encoding: vocab.json and merges.txt, then, by
    transformers' GPT-2 tokenizer made from them (hf_dir's config.json says gpt2),
    tokenizer.json and tokenizer_config.json."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    byte_char = bytes_to_unicode()  # GPT-2's files spell each byte as a printable character

    def text(token):
        return "".join(byte_char[b] for b in token)

    vocab = {text(token): rank for token, rank in enc._mergeable_ranks.items()}
    vocab["<|endoftext|>"] = enc.eot_token
    with open(os.path.join(hf_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(hf_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{text(a)} {text(b)}\n" for a, b in bpe_merges(enc._mergeable_ranks)))
    AutoTokenizer.from_pretrained(hf_dir, model_max_length=max_length).save_pretrained(hf_dir)


@script_errors("export_hf.py")
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, help="the run's folder, holding ckpt.pt")
    parser.add_argument("--hf_dir", required=True, help="the folder to write the Hugging Face model into")
    parser.add_argument("--model", choices=MODELS, default="returned", help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import safetensors  # noqa: F401  (save_pretrained writes model.safetensors with it)
        import transformers  # noqa: F401
    except ImportError as e:
        raise Error(f"{e.name} is not installed: pip install transformers safetensors")

    model, cfg = load_model(args.out_dir, args.model)
    if cfg.vocab_size < GPT2_VOCAB_SIZE:
        raise Error(f"the run in {args.out_dir} has vocab_size {cfg.vocab_size}, fewer than GPT-2's {GPT2_VOCAB_SIZE} tokens")
    enc = load_tokenizer()
    if os.path.exists(args.hf_dir) and (not os.path.isdir(args.hf_dir) or os.listdir(args.hf_dir)):
        raise Error(f"--hf_dir={args.hf_dir} exists and is not an empty folder: choose a new one")
    # write into a folder beside hf_dir, then rename it: hf_dir is never half written
    tmp = os.path.abspath(args.hf_dir) + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted export left
    hf_gpt2(model, GPT2_VOCAB_SIZE).save_pretrained(tmp)
    write_tokenizer(enc, tmp, cfg.block_size)
    if os.path.exists(args.hf_dir):
        os.rmdir(args.hf_dir)  # empty, checked above
    os.replace(tmp, args.hf_dir)
    print(f"export_hf.py: the {args.model} model of {args.out_dir} written to {args.hf_dir}")


if __name__ == "__main__":
    sys.exit(main())
