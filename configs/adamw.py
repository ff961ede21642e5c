# AdamW, the final iterate returned. Composes with a model config: python train.py configs/cpu.py configs/adamw.py
optimizer = "adamw"
