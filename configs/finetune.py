# Fine-tuning: OpenAI's GPT-2 (124M; or gpt2-medium, a Hugging Face folder, a run's out_dir) on
# your shards, a few hundred steps at a tenth of pretraining's learning rate. Needs transformers
# (and the hub, or its cache) for GPT-2's weights; compose it with a method:
#   python train.py configs/finetune.py configs/pace.py --data_dir=data/mydata --out_dir=out/ft-pace
init_from = "gpt2"
out_dir = "out/finetune"
lr = 6e-5  # a tenth of pretraining's 6e-4
warmup_steps = 20
max_steps = 500
batch_size = 8  # sequences of 1,024 tokens per micro-batch per process
total_batch_size = 65536  # 64 sequences per step
eval_interval = 50
vanilla_eval_interval = 100
eval_tokens = 1048576  # 1M tokens of the validation shard
ckpt_interval = 100
stats_interval = 25
