"""The commands that use what training made: eval, predict, explain, report, runs, and the
sweep summary.
"""
