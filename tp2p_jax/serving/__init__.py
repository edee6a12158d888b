"""Serving a trained run over HTTP: the generator compiled once and fed by a
dynamic batcher, request checks, metrics, and a drawing page.

`tp2p_jax.cli.serve` is the command line; `app.create_app` the ASGI
application on a `model.ServedModel`.
"""
