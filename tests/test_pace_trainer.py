"""PACE in Hugging Face's Trainer, which calls optimizer.eval() before evaluating and
optimizer.train() before a training step: evaluate() scores the EMA, evaluations during
training leave the training run bit-identical, and the one trap of saving."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from pace import PACE  # noqa: E402

SEQUENCE = 16  # tokens per example
VOCAB = 64


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(VOCAB, (n, SEQUENCE), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def train(tmp_path, eval_steps=None, steps=6):
    """A tiny GPT-2 trained by Trainer with PACE; evaluation every eval_steps steps."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQUENCE, n_embd=16, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(config)
    opt = PACE(model.parameters(), lr=1e-2, lambda_pullback=0.5, ema_kappa=0.3, use_ema_eval=True, fused=False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, save_strategy="no",
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True, logging_strategy="no")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(32, seed=1),
                                   eval_dataset=Tokens(16, seed=2), optimizers=(opt, None))
    trainer.train()
    return trainer, model, opt


def eval_loss(trainer, model):
    """Trainer's evaluation loss of `model` as it is, with no optimizer to call."""
    evaluator = transformers.Trainer(model=model, args=trainer.args, eval_dataset=trainer.eval_dataset)
    return evaluator.evaluate()["eval_loss"]


def test_evaluate_scores_the_ema(tmp_path):
    trainer, model, opt = train(tmp_path)
    with_ema = copy.deepcopy(model)
    for p, q in zip(model.parameters(), with_ema.parameters()):
        q.data.copy_(opt.state[p]["ema"])
    last_loss = eval_loss(trainer, copy.deepcopy(model))  # no evaluation yet: the model holds the last iterate
    pace_loss = trainer.evaluate()["eval_loss"]
    assert pace_loss == eval_loss(trainer, with_ema)
    assert pace_loss != pytest.approx(last_loss, rel=1e-4)


def test_evaluations_during_training_change_nothing_and_opt_eval_gives_the_ema(tmp_path):
    _, plain, plain_opt = train(tmp_path / "plain")
    _, evaluated, evaluated_opt = train(tmp_path / "evaluated", eval_steps=3)  # after steps 3 and 6
    # The trap: train() ended with an evaluation, so this model holds the EMA, the other the last iterate.
    for p, q in zip(plain.parameters(), evaluated.parameters()):
        assert torch.equal(q, plain_opt.state[p]["ema"])
    for opt in (plain_opt, evaluated_opt):
        opt.eval()  # the recipe: before save_model(), so that both save the EMA
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), evaluated.parameters()))
    for opt in (plain_opt, evaluated_opt):
        opt.train()
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), evaluated.parameters()))
