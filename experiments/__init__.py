"""Experiment configs (ml_collections). Each module's `get_config()` returns a
locked ConfigDict; its docstring gives the command that runs it."""
