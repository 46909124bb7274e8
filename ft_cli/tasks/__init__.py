"""What each task computes per batch: collators, forward pass, loss and metrics
(classification, regression, token classification, masked LM).
"""
