"""utils.geometry against naive versions and scikit-learn."""
import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors
from sklearn.random_projection import GaussianRandomProjection

from utils import geometry as geo


def cloud(n=60, m=12, seed=0, dtype=torch.float64):
    return torch.randn(n, m, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_gaussian_projection_law_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    A = geo.gaussian_projection(200, 300, generator=gen, dtype=torch.float64)
    assert A.shape == (200, 300) and A.dtype == torch.float64
    # entries ~ N(0, 1/n_out): the sample variance of 6e4 entries is within 5 SE (SE = sqrt(2/M)/n_out)
    assert abs(A.var().item() - 1 / 200) < 5 * math.sqrt(2 / A.numel()) / 200
    peer = GaussianRandomProjection(n_components=200, random_state=0).fit(np.zeros((2, 300)))
    assert abs(peer.components_.var() - A.var().item()) < 10 * math.sqrt(2 / A.numel()) / 200


def test_projected_gram_sample_is_exact_in_law():
    V = cloud(8, 30)
    W = geo.projected_gram_sample(V, 5, 4000, generator=torch.Generator().manual_seed(1))
    assert W.shape == (4000, 8, 5)
    # E[W W^T] over trials and columns = V V^T (columns of W are N(0, V V^T / n), n of them per trial)
    emp = torch.einsum("tik,tjk->ij", W, W) / 4000
    gram = V @ V.T
    scale = torch.sqrt(torch.outer(gram.diag(), gram.diag()) / 4000)  # entry-wise SE bound
    assert torch.all((emp - gram).abs() < 6 * scale * math.sqrt(2))
    # the explicit branch (N > m) has the same law: compare mean squared norms
    W2 = geo.projected_gram_sample(cloud(40, 3), 5, 500, generator=torch.Generator().manual_seed(2))
    assert W2.shape == (500, 40, 5)


def test_projected_gram_sample_handles_singular_gram():
    V = cloud(5, 10)
    V = torch.cat([V, V[:1]])  # repeated point: singular Gram matrix
    W = geo.projected_gram_sample(V, 3, 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(W).all()
    assert torch.allclose(W[:, 0], W[:, -1], atol=1e-6)


def test_pairwise_sq_dists_matches_naive_and_chunks():
    X, Y = cloud(37, 9, 1), cloud(11, 9, 2)
    naive = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(geo.pairwise_sq_dists(X, Y, chunk_size=5), naive, atol=1e-12)
    D = geo.pairwise_sq_dists(X, chunk_size=4)
    assert torch.all(D.diag() == 0) and torch.all(D >= 0)
    assert torch.allclose(D, torch.cdist(X, X) ** 2, atol=1e-10)
    D_np = geo.pairwise_sq_dists(X.numpy())
    assert isinstance(D_np, torch.Tensor) and torch.allclose(D_np, D)


def test_jl_distortion_matches_naive():
    X = cloud(30, 10, 3)
    Z = X @ torch.randn(10, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = geo.jl_distortion(X, Z, chunk_size=7)
    iu = torch.triu_indices(30, 30, 1)
    ratio = (torch.cdist(Z, Z) ** 2 / torch.cdist(X, X) ** 2)[iu[0], iu[1]]
    assert out["num_pairs"] == 435
    assert math.isclose(out["max_abs"], (ratio - 1).abs().max().item(), rel_tol=1e-9)
    assert math.isclose(out["mean_abs"], (ratio - 1).abs().mean().item(), rel_tol=1e-9)
    assert math.isclose(out["min_ratio"], ratio.min().item(), rel_tol=1e-9)
    assert math.isclose(out["max_ratio"], ratio.max().item(), rel_tol=1e-9)
    scaled = geo.jl_distortion(X, 1.1 * X, chunk_size=4)  # every ratio is 1.21: min and max must both be 1.21
    assert math.isclose(scaled["min_ratio"], 1.21, rel_tol=1e-12) and math.isclose(scaled["max_ratio"], 1.21,
                                                                                      rel_tol=1e-12)


def test_random_sphere():
    P = geo.random_sphere(100, 7, radius=3.0, generator=torch.Generator().manual_seed(0))
    assert P.shape == (100, 7) and torch.allclose(P.norm(dim=1), torch.full((100,), 3.0, dtype=P.dtype))


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "ip"])
def test_topk_neighbors_matches_sklearn(metric):
    X = cloud(80, 6, 5)
    got = geo.topk_neighbors(X, 5, metric=metric, chunk_size=13)
    if metric == "ip":
        score = X @ X.T
        score.fill_diagonal_(-torch.inf)
        expected = score.topk(5, dim=1).indices
    else:
        nn = NearestNeighbors(n_neighbors=6, algorithm="brute", metric=metric).fit(X.numpy())
        expected = torch.from_numpy(nn.kneighbors(X.numpy(), return_distance=False)[:, 1:])
    assert geo.recall_at_k(expected, got) == 1.0
    Y = cloud(20, 6, 6)
    assert geo.topk_neighbors(X, 3, Y=Y, metric=metric).shape == (80, 3)


def test_recall_at_k():
    true = torch.tensor([[0, 1], [2, 3]])
    assert geo.recall_at_k(true, torch.tensor([[1, 0], [3, 9]])) == 0.75


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="n_out"):
        geo.gaussian_projection(0, 5)
    with pytest.raises(ValueError, match="dtype"):
        geo.gaussian_projection(2, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="2 dimension"):
        geo.pairwise_sq_dists(torch.zeros(3))
    with pytest.raises(ValueError, match="same dimension"):
        geo.pairwise_sq_dists(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="numpy"):
        geo.pairwise_sq_dists([[1.0, 2.0]])
    with pytest.raises(ValueError, match="real-valued"):
        geo.pairwise_sq_dists(torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_trials"):
        geo.projected_gram_sample(cloud(4, 5), 3, 0)
    with pytest.raises(ValueError, match="at least 2 points"):
        geo.jl_distortion(torch.zeros(1, 3), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="same number"):
        geo.jl_distortion(torch.zeros(3, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="repeated points"):
        geo.jl_distortion(torch.zeros(3, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="radius"):
        geo.random_sphere(3, 2, radius=0.0)
    with pytest.raises(ValueError, match="metric"):
        geo.topk_neighbors(cloud(5, 2), 1, metric="manhattan")
    with pytest.raises(ValueError, match="exceeds"):
        geo.topk_neighbors(cloud(5, 2), 5)
    with pytest.raises(ValueError, match="shape"):
        geo.recall_at_k(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 3, dtype=torch.long))
