# A 7M-parameter GPT (6.4M of them the token embedding, whose 50304-way output layer takes most
# of the time) for a CPU: 60 steps of 4,096 tokens, minutes on 2 cores. Its data is what
# `make demo` prepares (data/demo); compose it with a method:
#   python train.py configs/cpu.py configs/pace.py --out_dir=out/cpu-pace
data_dir = "data/demo"
out_dir = "out/cpu"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
total_batch_size = 4096  # one micro-batch of 16 x 256 tokens per step
max_steps = 60  # 246K tokens
lr = 3e-3  # small models train well at larger learning rates
warmup_steps = 8
eval_interval = 20
vanilla_eval_interval = 20  # ema, pace: the last iterate at every evaluation too, for the demo's curves
eval_tokens = 32768  # 128 sequences of the validation shard
log_interval = 1
ckpt_interval = 20
stats_interval = 10  # PACE's telemetry every 10 steps, 6 points per curve (its cost: docs/measurements.md)
