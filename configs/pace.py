# PACE: AdamW with a per-coordinate pullback of the weights toward their EMA, the EMA returned.
# c = 0.15 and kappa = 0.2 are the values of the PACE code companion's usage example.
optimizer = "pace"
lambda_pullback = 0.15
ema_kappa = 0.2
