"""The typed run spec (one dataclass per config group, ranges beside each field) and its
composition from configs/, recipes and overrides.
"""
