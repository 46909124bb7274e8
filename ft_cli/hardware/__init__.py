"""Device and precision (autocast, scaler, the optimizer step), and the parallel backends (one
process, DDP, FSDP).
"""
