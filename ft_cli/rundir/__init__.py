"""What a run dir holds, read and written in one low place: checkpoints and their
manifests, the lock and the claim, and the run read back as a row of `ft runs`.

Nothing here imports from the layers above (training, commands): they build on it.
"""
