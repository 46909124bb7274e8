"""Ensembles of trained runs: members, combination methods, the saved manifest, scoring."""
