"""Radial functions of the edge length: Bessel basis and smooth cutoff envelopes."""

from __future__ import annotations

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """(2/rc) · sin(k_n r) / r with k_n = nπ/rc initially, optionally trainable."""

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        self.prefactor = 2.0 / self.cutoff
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * r) / r


class PolynomialCutoff(nn.Module):
    """The NequIP polynomial envelope of order p: 1 at r=0, with p-1 vanishing derivatives at rc."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        envelope = (
            1.0
            - 0.5 * (p + 1.0) * (p + 2.0) * x**p
            + p * (p + 2.0) * x ** (p + 1.0)
            - 0.5 * p * (p + 1.0) * x ** (p + 2.0)
        )
        return envelope * (x < 1.0)


class XPLORCutoff(nn.Module):
    """XPLOR switch: 1 below r_on, a smooth cubic switch to 0 between r_on and rc."""

    def __init__(self, cutoff: float, cutoff_on: float):
        super().__init__()
        self.cutoff = float(cutoff)
        self.cutoff_on = float(cutoff_on)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        rc2, ron2, r2 = self.cutoff**2, self.cutoff_on**2, r * r
        switch = (rc2 - r2) ** 2 * (rc2 + 2.0 * r2 - 3.0 * ron2) / (rc2 - ron2) ** 3
        return torch.where(r < self.cutoff_on, torch.ones_like(r), switch) * (r < self.cutoff)
