"""Loading tokenizers and task models (local, packaged or from the hub), and finding a trained
run's model.
"""
