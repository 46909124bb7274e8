"""Searches over runs: what each trial is scored on (`objectives`)."""
