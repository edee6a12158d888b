"""Inference on trained runs: loading, style embeddings, sketch I/O.

Used by the command-line tools `tp2p_jax.cli.predict`, `tp2p_jax.cli.evaluate` and
`tp2p_jax.cli.export`.
"""
