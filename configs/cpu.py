# A 7M-parameter GPT (6.4M of them the token embedding, whose 50304-way output layer takes
# most of the time) that trains its 60 steps in under two minutes on a 2-core CPU, at ~3,300 tokens/s.
# Compose it with a method: python train.py configs/cpu.py configs/pace.py
# The data: the Python documentation in ../shared, 3.5M GPT-2 tokens in FineWeb's format:
#   TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache python prepare_fineweb.py \
#       --data_files '../shared/corpus/pydocs/*.parquet' --out_dir data/pydocs --shard_size 1000000
data_dir = "data/pydocs"
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
# PACE's telemetry every 10 steps: a telemetry step took 27% longer than a plain one here (measured under
# load: pace.py's plain loop over the 7.3M parameters), so ~3% of the run, for 6 points per curve
stats_interval = 10
