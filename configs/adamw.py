# AdamW, the last iterate returned. Composes with a model config: python train.py configs/cpu.py configs/adamw.py
optimizer = "adamw"
