"""CKNNA, centered kernel nearest-neighbour alignment (Huh et al., *The Platonic Representation
Hypothesis*, ICML 2024), as MSAE uses it: linear kernels ``K = A A^T`` and ``L = B B^T`` of two
representations of the same n items, each item's k nearest neighbours by kernel value (itself
excluded), and the unbiased HSIC (Song et al. 2012) of the kernels restricted to the neighbour
pairs both representations share, normalised by each kernel's HSIC with itself under its own
neighbour mask:

    CKNNA(A, B) = HSIC(M_A M_B K, M_A M_B L) / sqrt(HSIC(M_A K, M_A K) HSIC(M_B L, M_B L))

1.0 for a representation with itself; about 0 for unrelated ones. The masked kernels have k
entries per row, so after the kernel products and each row's top k everything is O(n k).
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_K = 10
"""Neighbours per item, MSAE's and Huh et al.'s default."""


def neighbour_keys(kernel_nn: Tensor, k: int) -> Tensor:
    """int64 [n * k], sorted: ``i * n + j`` for each row i and each of its k largest kernel
    values' columns j (i itself excluded): the non-zero positions of the neighbour mask."""
    n = kernel_nn.shape[0]
    scores_nn = kernel_nn.clone().fill_diagonal_(float("-inf"))
    cols_nk = scores_nn.topk(k, dim=1).indices
    rows_nk = torch.arange(n, device=kernel_nn.device)[:, None]
    return (rows_nk * n + cols_nk).reshape(-1).sort().values


def hsic_unbiased_masked(keys_e: Tensor, a_e: Tensor, b_e: Tensor, n: int) -> float:
    """Song et al.'s unbiased HSIC (their equation 5) of two [n, n] kernels that are zero except
    at the sorted positions ``keys_e`` (values ``a_e`` and ``b_e``; none on the diagonal):

        (sum(A * B^T) + sum(A) sum(B) / ((n-1)(n-2)) - 2 sum(A @ B) / (n-2)) / (n (n-3))

    in O(len(keys)) instead of O(n^2) (``sum(A @ B)`` is A's column sums dot B's row sums)."""
    a_e, b_e = a_e.double(), b_e.double()
    rows_e, cols_e = keys_e // n, keys_e % n
    transposed_e = cols_e * n + rows_e  # where B^T's entry of each (i, j) sits in B
    pos_e = torch.searchsorted(keys_e, transposed_e).clamp_max(len(keys_e) - 1)
    found_e = keys_e[pos_e] == transposed_e
    trace_term = (a_e[found_e] * b_e[pos_e[found_e]]).sum()
    sums_term = a_e.sum() * b_e.sum() / ((n - 1) * (n - 2))
    col_sums_n = torch.bincount(cols_e, a_e, minlength=n)
    row_sums_n = torch.bincount(rows_e, b_e, minlength=n)
    cross_term = 2 * (col_sums_n @ row_sums_n) / (n - 2)
    return float((trace_term + sums_term - cross_term) / (n * (n - 3)))


@torch.inference_mode()
def cknna(a_nd: Tensor, b_nm: Tensor, k: int = DEFAULT_K) -> float:
    """CKNNA of two representations of the same n items (rows); ``ValueError`` when n is too
    small for k neighbours or the unbiased estimator (n > k and n >= 4)."""
    n = a_nd.shape[0]
    if b_nm.shape[0] != n:
        raise ValueError(f"CKNNA compares the same items: {n} rows against {b_nm.shape[0]}")
    a_nd, b_nm = a_nd.float(), b_nm.float()
    return cknna_of_kernels(a_nd @ a_nd.T, b_nm @ b_nm.T, k)


@torch.inference_mode()
def cknna_of_kernels(k_nn: Tensor, l_nn: Tensor, k: int = DEFAULT_K) -> float:
    """CKNNA from the two linear kernels (so one kernel can serve several comparisons); NaN when
    a representation is degenerate (e.g. constant: no neighbours to align)."""
    n = k_nn.shape[0]
    if k < 1 or n <= max(k, 3):
        raise ValueError(f"CKNNA with k={k} neighbours needs more than {max(k, 3)} items, got {n}")
    keys_k, keys_l = neighbour_keys(k_nn, k), neighbour_keys(l_nn, k)
    k_flat, l_flat = k_nn.reshape(-1), l_nn.reshape(-1)
    shared = keys_k[torch.isin(keys_k, keys_l)]
    cross = hsic_unbiased_masked(shared, k_flat[shared], l_flat[shared], n)
    self_k = hsic_unbiased_masked(keys_k, k_flat[keys_k], k_flat[keys_k], n)
    self_l = hsic_unbiased_masked(keys_l, l_flat[keys_l], l_flat[keys_l], n)
    if self_k * self_l <= 0:
        return float("nan")
    return cross / (self_k * self_l) ** 0.5
