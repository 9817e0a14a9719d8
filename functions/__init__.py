"""The Functions blueprints: one module per trigger, each a few lines around a call into ``shared``."""
