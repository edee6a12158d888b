"""Interoperability with the PyTorch originals: reading their checkpoints
without torch (`torch_weights`), and the synthetic-weight recipe shared by
the golden tests and their fixture generator (`synthetic`)."""
