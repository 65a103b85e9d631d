"""Activation Clustering: within the samples of one label, poison forms a cluster of its
own in the network's last hidden layer.

Reference: B. Chen, W. Carvalho, N. Baracaldo, H. Ludwig, B. Edwards, T. Lee, I. Molloy,
B. Srivastava. "Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering". AAAI Workshop on Artificial Intelligence Safety, 2019 (arXiv 1811.03728).
For each label the penultimate features are reduced to ``dims`` dimensions with ICA (the
paper's 10), split into two clusters with k-means, and a cluster holding at most
``size_threshold`` of the label's samples (the paper's relative size analysis; 0.35) is
flagged. A sample's suspicion is one minus the relative size of its cluster, so the
smaller a sample's cluster, the more suspect. scikit-learn's FastICA and KMeans do the
reduction and the clustering (seeded).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ..._params import Float, Int
from .scan import LabelScan


class ActivationClustering(LabelScan):
    """Parameters (keyword-only)
    -------------------------
    dims : int >= 1, default 10 - ICA components
    size_threshold : float in (0, 0.5], default 0.35 - a cluster this small is poison
    seed : int >= 0, default 0; batch_size : int >= 1, default 256
    """

    method = "activation_clustering"
    constraints = {"dims": Int(low=1), "size_threshold": Float(low=0.0, high=0.5,
                                                                 low_open=True),
                   "seed": Int(low=0), "batch_size": Int(low=1)}

    def __init__(self, *, dims: int = 10, size_threshold: float = 0.35, seed: int = 0,
                 batch_size: int = 256) -> None:
        self.dims = self._validated("dims", dims)
        self.size_threshold = self._validated("size_threshold", size_threshold)
        self.seed = self._validated("seed", seed)
        self.batch_size = self._validated("batch_size", batch_size)

    def _score(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import FastICA

        if len(feats) < 2:
            return torch.zeros(len(feats), dtype=torch.float64), torch.zeros(
                len(feats), dtype=torch.bool)
        values = feats.numpy()
        dims = min(self.dims, values.shape[1], len(values) - 1)
        with warnings.catch_warnings():  # ICA's convergence notes on tiny classes
            warnings.simplefilter("ignore")
            reduced = FastICA(n_components=dims, random_state=self.seed,
                              whiten="unit-variance").fit_transform(values)
        clusters = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(reduced)
        share = np.bincount(clusters, minlength=2) / len(clusters)
        small = int(np.argmin(share))
        flag = torch.from_numpy(clusters == small) & bool(share[small] <= self.size_threshold)
        return torch.from_numpy(1.0 - share[clusters]), flag
