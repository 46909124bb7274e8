"""Data checks: what is wrong with a run's data before it trains (`ft data check`, and a
short form at the start of every `ft train`).

`rows` reads each split into what the checks compare (a normalised identity per
row, its label, its text, its file's size); `duplicates` finds repeated rows,
rows shared between splits, conflicting labels and near duplicates; `run`
gathers every finding into a `findings.DataCheck`, which writes `data_check.json`
and the tables the tools show.
"""
