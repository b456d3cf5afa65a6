"""Natural-parameter network (NPN) layers: a mean and a variance flow through the net.

BOSHNAS models aleatoric (data) noise with an NPN (Wang, Shi, Yeung 2016): every weight is a
Gaussian with a learned mean and a softplus-parametrised variance, every activation is summarised
by its mean and variance, and each layer maps input moments to output moments in closed form
("moment matching"). The last layer's mean is the prediction μ(x); its variance is the aleatoric
variance s(x). The layers follow the reference code (``jha-lab/boshnas: boshnas/npn.py``) with one
change: the ReLU uses the exact Gaussian CDF (``torch.special.ndtr``) where the reference uses the
logistic approximation ``sigmoid(sqrt(8/π)·z)``, so the ReLU moments are exact for a Gaussian input.

A layer takes and returns a ``(mean, variance)`` pair of tensors of shape ``(batch, features)``
(an ``NPNLinear`` also accepts ``(mean, None)`` for a deterministic input).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

Moments = tuple[torch.Tensor, torch.Tensor]
#: Input of an ``NPNLinear``: the variance may be None for a deterministic input.
InputMoments = tuple[torch.Tensor, torch.Tensor | None]

#: Floor for variances that enter a square root or a logarithm: the closed forms can round to
#: (slightly) negative values where the true variance is tiny.
VARIANCE_FLOOR = 1e-8


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class NPNLinear(nn.Module):
    """Linear layer with Gaussian weights ``W ~ N(W_m, softplus(W_s_))``.

    For an input with independent entries of mean ``x_m`` and variance ``x_s``, independent of the
    weights, the output moments are exact:
    ``o_m = x_m W_m + b_m`` and ``o_s = x_s W_s + x_s W_m² + x_m² W_s + b_s``.

    Args:
        in_features: Input width.
        out_features: Output width.
        generator: Random generator for the initialisation (the reference's uniform Glorot
            initialisation of the means, small positive variances).
    """

    def __init__(
        self, in_features: int, out_features: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        bound = math.sqrt(6) / math.sqrt(in_features + out_features)
        weight_mean = 2 * bound * (torch.rand(in_features, out_features, generator=generator) - 0.5)
        weight_var = 0.01 * bound * torch.rand(in_features, out_features, generator=generator)
        self.weight_mean = nn.Parameter(weight_mean)
        # Variances are stored through softplus⁻¹ so they stay positive under any update.
        self.weight_var_raw = nn.Parameter(_inverse_softplus(weight_var.clamp_min(1e-12)))
        self.bias_mean = nn.Parameter(torch.zeros(out_features))
        self.bias_var_raw = nn.Parameter(torch.full((out_features,), -10.0))

    @property
    def weight_var(self) -> torch.Tensor:
        """Per-weight variance (positive)."""
        return F.softplus(self.weight_var_raw)

    @property
    def bias_var(self) -> torch.Tensor:
        """Per-bias variance (positive)."""
        return F.softplus(self.bias_var_raw)

    def forward(self, x: InputMoments) -> Moments:
        x_m, x_s = x
        weight_var = self.weight_var
        out_m = x_m @ self.weight_mean + self.bias_mean
        out_s = (x_m * x_m) @ weight_var + self.bias_var
        if x_s is not None:
            out_s = out_s + x_s @ (weight_var + self.weight_mean * self.weight_mean)
        return out_m, out_s


class NPNReLU(nn.Module):
    """ReLU on a Gaussian input ``N(m, s)``: the exact mean and variance of ``max(0, X)``.

    With ``σ = √s``, ``z = m/σ``, Φ and φ the standard normal CDF and density:
    ``E = m·Φ(z) + σ·φ(z)``, ``E[·²] = (m² + s)·Φ(z) + m·σ·φ(z)``, ``Var = E[·²] − E²``.
    """

    def forward(self, x: Moments) -> Moments:
        m, s = x
        s = s.clamp_min(VARIANCE_FLOOR)
        std = torch.sqrt(s)
        z = m / std
        cdf = torch.special.ndtr(z)
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        mean = m * cdf + std * pdf
        second = (m * m + s) * cdf + m * std * pdf
        return mean, (second - mean * mean).clamp_min(0.0)


class NPNSigmoid(nn.Module):
    """Sigmoid on a Gaussian input ``N(m, s)`` by the probit approximation (as the reference).

    ``E ≈ σ(m / √(1 + π s/8))`` and ``E[·²] ≈ σ(α(m + β) / √(1 + π α² s/8))`` with
    ``α = 4 − 2√2``, ``β = −log(√2 + 1)`` (Wang et al. 2016, section 3.2).
    """

    xi_sq = math.pi / 8
    alpha = 4 - 2 * math.sqrt(2)
    beta = -math.log(math.sqrt(2) + 1)

    def forward(self, x: Moments) -> Moments:
        m, s = x
        mean = torch.sigmoid(m / torch.sqrt(1 + self.xi_sq * s))
        second = torch.sigmoid(
            self.alpha * (m + self.beta) / torch.sqrt(1 + self.xi_sq * self.alpha**2 * s)
        )
        return mean, (second - mean * mean).clamp_min(0.0)


class NPNRegressor(nn.Module):
    """The BOSHNAS NPN: NPNLinear(d,32)–ReLU–NPNLinear(32,32)–ReLU–NPNLinear(32,1)–Sigmoid.

    Args:
        input_dim: Width of the input (the embedding dimension).
        hidden: Width of the two hidden layers (32 in the reference).
        generator: Random generator for the initialisation.
    """

    def __init__(
        self, input_dim: int, hidden: int = 32, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                NPNLinear(input_dim, hidden, generator),
                NPNReLU(),
                NPNLinear(hidden, hidden, generator),
                NPNReLU(),
                NPNLinear(hidden, 1, generator),
                NPNSigmoid(),
            ]
        )

    def forward(self, x: torch.Tensor) -> Moments:
        """Maps a deterministic input batch ``(B, d)`` to ``(mean (B,), variance (B,))``."""
        moments: InputMoments = (x, None)  # the embedding is known exactly: zero variance
        for layer in self.layers:
            moments = layer(moments)
        mean, var = moments
        assert var is not None
        return mean.squeeze(-1), var.squeeze(-1)


def heteroscedastic_nll(
    mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, weight: float = 10.0
) -> torch.Tensor:
    """The reference's aleatoric loss ``0.5·Σ[weight·(μ − y)²/s + log s]``, as a batch mean.

    The reference sums per sample (one sample per step); a mean over the minibatch keeps the
    step size independent of the batch size. The variance is floored so that a confidently
    fitted point cannot send ``log s`` to −∞.
    """
    var = var.clamp_min(1e-6)
    return 0.5 * torch.mean(weight * (mean - target) ** 2 / var + torch.log(var))
