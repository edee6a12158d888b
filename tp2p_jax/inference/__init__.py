"""Inference on trained runs: loading, style embeddings, sketch I/O.

Used by the command-line tools `tp2p_jax.predict`, `tp2p_jax.evaluate` and
`tp2p_jax.export`.
"""
