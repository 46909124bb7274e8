"""Reading data files and hub datasets, checking and tokenizing them into splits, and batching
them.
"""
