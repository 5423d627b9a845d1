"""Generic, modality-free sample-quality metrics, each tested against a closed form or a brute-force reference.

- distributions of vectors: :func:`sliced_wasserstein`, :func:`mmd_unbiased` (RBF mixture),
  :func:`mmd_rbf` (biased), :func:`energy_distance`, :func:`knn_precision_recall`;
- learned features: :func:`frechet_distance` (FID's formula), :func:`kid`; feature networks trained
  locally and cached: :func:`train_feature_network`, :func:`extract_features`;
- sets of items with any distance: :func:`set_metrics` (MMD, COV, 1-NNA), :func:`chamfer_distance`.
"""
from mfkit.metrics.distances import (energy_distance, energy_within, mmd_rbf, mmd_unbiased, mmd_within, rbf_mixture,
                                     sliced_wasserstein, wasserstein_1d_sorted)
from mfkit.metrics.features import FeatureNetwork, dataset_digest, extract_features, train_feature_network
from mfkit.metrics.frechet import frechet_distance, frechet_from_stats, gaussian_stats, sqrtm_psd
from mfkit.metrics.kid import kid, mmd2_unbiased_polynomial, polynomial_kernel
from mfkit.metrics.knn import knn_precision_recall, knn_radii
from mfkit.metrics.sets import chamfer_distance, pairwise, set_metrics, set_metrics_from_matrices

__all__ = [
    "FeatureNetwork", "chamfer_distance", "dataset_digest", "energy_distance", "energy_within", "extract_features", "frechet_distance",
    "frechet_from_stats", "gaussian_stats", "kid", "knn_precision_recall", "knn_radii", "mmd2_unbiased_polynomial",
    "mmd_rbf", "mmd_unbiased", "mmd_within", "pairwise", "polynomial_kernel", "rbf_mixture", "set_metrics",
    "set_metrics_from_matrices", "sliced_wasserstein", "sqrtm_psd", "train_feature_network", "wasserstein_1d_sorted",
]
