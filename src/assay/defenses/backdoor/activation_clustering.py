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
from torch import nn

from ..._params import Float, Int
from ...core.dataset import Dataset
from .scan import PoisonScan, features_by_label


class ActivationClustering:
    """Parameters (keyword-only)
    -------------------------
    dims : int >= 1, default 10 - ICA components
    size_threshold : float in (0, 0.5], default 0.35 - a cluster this small is poison
    seed : int >= 0, default 0; batch_size : int >= 1, default 256
    """

    constraints = {"dims": Int(low=1), "size_threshold": Float(low=0.0, high=0.5,
                                                                 low_open=True),
                   "seed": Int(low=0), "batch_size": Int(low=1)}

    def __init__(self, *, dims: int = 10, size_threshold: float = 0.35, seed: int = 0,
                 batch_size: int = 256) -> None:
        owner = type(self).__name__
        self.dims = self.constraints["dims"].check("dims", dims, owner)
        self.size_threshold = self.constraints["size_threshold"].check(
            "size_threshold", size_threshold, owner)
        self.seed = self.constraints["seed"].check("seed", seed, owner)
        self.batch_size = self.constraints["batch_size"].check("batch_size", batch_size, owner)

    def scan(self, model: nn.Module, data: Dataset) -> PoisonScan:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import FastICA

        scores = torch.zeros(len(data), dtype=torch.float64)
        flagged = torch.zeros(len(data), dtype=torch.bool)
        for where, feats in features_by_label(model, data, type(self).__name__,
                                              batch_size=self.batch_size):
            if len(where) < 2:
                continue
            values = feats.numpy()
            dims = min(self.dims, values.shape[1], len(where) - 1)
            with warnings.catch_warnings():  # ICA's convergence notes on tiny classes
                warnings.simplefilter("ignore")
                reduced = FastICA(n_components=dims, random_state=self.seed,
                                  whiten="unit-variance").fit_transform(values)
            clusters = KMeans(n_clusters=2, n_init=10, random_state=self.seed).fit_predict(
                reduced)
            share = np.bincount(clusters, minlength=2) / len(clusters)
            scores[where] = torch.from_numpy(1.0 - share[clusters])
            small = int(np.argmin(share))
            if share[small] <= self.size_threshold:
                flagged[where[torch.from_numpy(clusters == small)]] = True
        return PoisonScan(scores, flagged, "activation_clustering",
                          {"dims": self.dims, "size_threshold": self.size_threshold})
