"""ft: pretrain and fine-tune transformer encoders from composed YAML configs."""

__version__ = "0.1.0"
