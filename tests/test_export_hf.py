"""export_hf.py, and model.py against an independent implementation: Hugging Face's GPT-2 with our weights."""

import json
import os

import pytest
import torch

import checkpoint
from model import GPT, GPTConfig
from tools import export_hf

pytestmark = pytest.mark.usefixtures("one_thread")

pytest.importorskip("transformers")
pytest.importorskip("safetensors")

# text that exercises GPT-2's pre-tokenizer: whitespace runs, unicode, numbers, contractions
TEXTS = [
    "Hello world",
    "I'm sure they'll've done it; it's JOHN'S, isn't it? 'tis 'S",
    "   leading, trailing and inner   runs \n\n\t  x   \n",
    "naïve café, 日本語のテキスト, Ελληνικά, emoji 🙂👍🏽 and \u00a0no-break\u2009thin\u3000wide spaces",
    "12345 3.14159 1,000,000 0x1F -42 1e-3 2026-11-30",
    "def f(x):\r\n    return x**2  # comment\n\n\n",
    " ".join(map(chr, range(33, 127))),  # every printable ASCII character, one token each
    "a".join(map(chr, range(161, 400))),  # two-byte characters
    "",
]


def test_model_logits_equal_hugging_face_gpt2():
    """model.py's forward pass against transformers' GPT2LMHeadModel with the same weights, in
    float64: any difference in the architecture shows far above the 1e-5 tolerance."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, n_layer=2, n_head=4, n_embd=32)).double()
    with torch.no_grad():  # weights of order 1, LayerNorm gains and biases included: every part matters
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    hf = export_hf.hf_gpt2(model, export_hf.GPT2_VOCAB_SIZE)
    tokens = torch.randint(0, export_hf.GPT2_VOCAB_SIZE, (3, 24))
    with torch.no_grad():
        ours, _ = model(tokens)
        theirs = hf(tokens).logits
    assert ours.shape == (3, 24, 50304) and theirs.shape == (3, 24, export_hf.GPT2_VOCAB_SIZE)
    torch.testing.assert_close(ours[..., :export_hf.GPT2_VOCAB_SIZE], theirs, rtol=0, atol=1e-5)


def test_bpe_merges_rebuild_the_ranks():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"ab": 256, b"abc": 257, b"bc": 258, b"abcbc": 259})
    assert export_hf.bpe_merges(ranks) == [[b"a", b"b"], [b"ab", b"c"], [b"b", b"c"], [b"abc", b"bc"]]


@pytest.fixture(scope="module")
def exported(tiny_run, gpt2_encoding, tmp_path_factory):
    hf_dir = tmp_path_factory.mktemp("export") / "hf"
    export_hf.main([f"--out_dir={tiny_run}", f"--hf_dir={hf_dir}"])
    return hf_dir


def test_export_loads_offline_with_our_logits(tiny_run, exported, monkeypatch):
    from transformers import AutoModelForCausalLM
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"} <= set(os.listdir(exported))
    config = json.loads((exported / "config.json").read_text())
    assert (config["vocab_size"], config["n_positions"], config["model_type"]) == (50257, 32, "gpt2")
    hf = AutoModelForCausalLM.from_pretrained(exported)
    returned, _ = checkpoint.load_model(tiny_run, "returned")
    last, _ = checkpoint.load_model(tiny_run, "last")
    tokens = torch.randint(0, export_hf.GPT2_VOCAB_SIZE, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(tokens).logits
        ours, _ = returned(tokens)
        iterate, _ = last(tokens)
    torch.testing.assert_close(theirs, ours[..., :export_hf.GPT2_VOCAB_SIZE], rtol=0, atol=1e-4)
    assert (theirs - iterate[..., :export_hf.GPT2_VOCAB_SIZE]).abs().max() > 1e-2  # the EMA, not the last iterate


def test_export_tokenizer_encodes_as_tiktoken(exported, gpt2_encoding, monkeypatch):
    from transformers import AutoTokenizer
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(exported)
    for text in TEXTS:
        ids = gpt2_encoding.encode_ordinary(text)
        assert tokenizer(text)["input_ids"] == ids, text
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == gpt2_encoding.eot_token and tokenizer.model_max_length == 32


def test_export_refuses_a_used_folder(tiny_run, exported, gpt2_encoding):
    before = sorted(os.listdir(exported))
    with pytest.raises(SystemExit, match="^export_hf.py: error: --hf_dir=.* exists and is not an empty folder"):
        export_hf.main([f"--out_dir={tiny_run}", f"--hf_dir={exported}"])
    assert sorted(os.listdir(exported)) == before
