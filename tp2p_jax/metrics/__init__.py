"""Evaluation metrics.

* `image`: per-image L1, PSNR, SSIM and LPIPS on NHWC images in [-1, 1], and
  their summaries (what `evaluate` and training's validation report).
* Inception-v3 pool3 features (FID layout) from local weights: the network
  is `tp2p_jax.models.inception`; `lpips_vgg` is the LPIPS network.
* `distribution`: FID and KID between feature sets, with a statistics cache.
* `embedding`: style-encoder centroids, cosine scores, EER, accuracy, 2-D maps.
"""
from tp2p_jax.metrics.distribution import cached_statistics
from tp2p_jax.metrics.distribution import feature_statistics
from tp2p_jax.metrics.distribution import fid
from tp2p_jax.metrics.distribution import fid_and_kid
from tp2p_jax.metrics.distribution import fid_from_features
from tp2p_jax.metrics.distribution import kid
from tp2p_jax.metrics.embedding import class_centroids
from tp2p_jax.metrics.embedding import classification_accuracy
from tp2p_jax.metrics.embedding import cosine_scores
from tp2p_jax.metrics.embedding import eer_from_trials
from tp2p_jax.metrics.embedding import equal_error_rate
from tp2p_jax.metrics.embedding import project_2d
from tp2p_jax.metrics.embedding import save_projection_plot
from tp2p_jax.metrics.image import l1
from tp2p_jax.metrics.image import lpips
from tp2p_jax.metrics.image import mean_psnr
from tp2p_jax.metrics.image import PSNR_CAP_DB
from tp2p_jax.metrics.image import psnr
from tp2p_jax.metrics.image import reconstruction_metric
from tp2p_jax.metrics.image import reconstruction_metric_names
from tp2p_jax.metrics.image import PSNRSummary
from tp2p_jax.metrics.image import ssim
from tp2p_jax.metrics.image import summarize_psnr
from tp2p_jax.metrics.image import summarize_reconstruction
from tp2p_jax.models.inception import convert_torch_state_dict
from tp2p_jax.models.inception import inception_features
from tp2p_jax.models.inception import InceptionV3
from tp2p_jax.models.inception import InceptionWeightError
from tp2p_jax.models.inception import init_inception_variables
from tp2p_jax.models.inception import load_inception_weights
from tp2p_jax.models.inception import to_torch_state_dict

__all__ = [
    "cached_statistics", "feature_statistics", "fid", "fid_and_kid", "fid_from_features", "kid",
    "class_centroids", "classification_accuracy", "cosine_scores",
    "eer_from_trials", "equal_error_rate", "project_2d", "save_projection_plot",
    "l1", "lpips", "mean_psnr", "PSNR_CAP_DB", "psnr", "PSNRSummary",
    "reconstruction_metric", "reconstruction_metric_names", "ssim", "summarize_psnr",
    "summarize_reconstruction", "convert_torch_state_dict", "inception_features",
    "InceptionV3", "InceptionWeightError", "init_inception_variables",
    "load_inception_weights", "to_torch_state_dict",
]
