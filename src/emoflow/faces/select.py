"""Frame reduction as in the thesis (2.1.2): K-means keeps the most distinguishable frames."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import ThreadpoolController

# A clip's few hundred rows cluster faster on one thread than OpenMP starts its team: 13 ms
# against 60–100 ms for a 170-frame clip on 2 cores (bench/infer.py's `select`). The limit is
# the calling thread's own (OpenMP's nthreads is per thread), and the clusters do not depend on it.
_THREADS = ThreadpoolController()


def shape_features(points: np.ndarray) -> np.ndarray:
    """Landmarks per frame ``(n, k, 2)`` → translation- and scale-free feature vectors."""
    centred = points - points.mean(1, keepdims=True)
    scale = np.sqrt((centred**2).sum((1, 2), keepdims=True) / points.shape[1]) + 1e-9
    return (centred / scale).reshape(len(points), -1)


def patch_features(patches: np.ndarray) -> np.ndarray:
    """Face patches ``(n, h, w)`` → brightness- and contrast-free vectors (zero mean, unit norm),
    so that K-means tells frames apart by what the face looks like, not by the light."""
    x = patches.reshape(len(patches), -1).astype(np.float32)
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def select_frames(features: np.ndarray, frame_ids: list[int], n: int, peak: int | None,
                  seed: int = 0) -> list[int]:  # fmt: skip
    """``n`` representative frames (in temporal order), always including ``peak``.

    ``features`` has one row per candidate frame ``frame_ids``. Each K-means cluster contributes
    the frame nearest its centre; the peak (or the face frame nearest to it) replaces the
    representative of its own cluster. Clips with at most ``n`` candidates keep them all.
    """
    if len(frame_ids) <= n:
        return sorted(frame_ids)
    with _THREADS.limit(limits=1, user_api="openmp"):
        km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(features)
    dist = np.linalg.norm(features - km.cluster_centers_[km.labels_], axis=1)
    chosen: dict[int, int] = {}
    for row, cluster in enumerate(km.labels_):
        if cluster not in chosen or dist[row] < dist[chosen[cluster]]:
            chosen[int(cluster)] = row
    if peak is not None:
        peak_row = int(np.argmin(np.abs(np.array(frame_ids) - peak)))
        chosen[int(km.labels_[peak_row])] = peak_row
    return sorted(frame_ids[r] for r in chosen.values())
