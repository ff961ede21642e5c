# GPUs with 80 GB (A100 80GB, H100, H200): micro-batches of 64 x 1024 tokens, as llm.c and
# build-nanogpt, so that 8 GPUs take the 524,288 tokens of a step in one micro-batch each
# (2 and 4 accumulation steps on 4 and 2 GPUs). Memory per GPU: docs/gpus.md (gpu_check.py
# measures it). Compose it with a method:
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpu80gb.py configs/pace.py
batch_size = 64
