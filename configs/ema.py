# AdamW training, the EMA of the iterates returned (evaluated through opt.eval()).
# The EMA decays as (1 + t)^(-ema_kappa), the same average PACE returns.
optimizer = "ema"
ema_kappa = 0.2
