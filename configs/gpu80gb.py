# GPUs with 80 GB (A100 80GB, H100, H200): micro-batches of 64 x 1024 tokens, as llm.c and
# build-nanogpt, so that 8 GPUs take the 524,288 tokens of a step in one micro-batch each
# (2 and 4 accumulation steps on 4 and 2 GPUs). Compose it with a method:
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpu80gb.py configs/pace.py
# Memory per GPU, an estimate by arithmetic, not a measurement (bench_train.py measures it):
# 65,536 tokens per micro-batch x 12 layers x ~34 bytes x 768 of bf16 activations ~ 20.5 GB; the
# float32 log-probabilities of 65,536 x 50,304 logits 13.2 GB, ~33 GB at the start of the backward
# pass with their gradient and the bf16 logits (less where torch.compile fuses the loss); weights,
# gradients and PACE's state 124M x (4 + 4 + 12) bytes = 2.5 GB: 36-56 GB in all.
batch_size = 64
