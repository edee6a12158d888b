"""The VGG16 art tools, neural style transfer (Gatys) and DeepDream, on the
shipped ImageNet VGG16 weights (`tp2p_jax.models.vgg`).

`style_transfer` and `deepdream` work on arrays: NHWC float32 images in
[0, 1], batch 1. Their command lines are `python -m tp2p_jax.cli.stylize`
and `python -m tp2p_jax.cli.dream`.
"""
