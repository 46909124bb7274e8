"""The training loop and what it needs: the one setup, optimizer and schedule, checkpoints,
resume, run-dir ownership, guards.
"""
