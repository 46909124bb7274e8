"""Fine-tuning strategies: layer groups and freezing, LoRA, distillation, weight penalties, and
the hooks the engine calls.
"""
