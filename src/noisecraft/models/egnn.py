"""An E(n)-equivariant graph network denoiser over atom positions and atom types (model "egnn").

The E(n)-equivariant graph convolutional layer (EGCL) of Satorras et al. 2021 ("E(n) Equivariant Graph Neural
Networks", eqs. 3-6) as used for molecule diffusion by Hoogeboom et al. 2022 (EDM, Sec. 3.3 and eq. 12), on the
fully connected graph of a molecule's real atoms (cond["atom_mask"]):

    m_ij  = phi_e(h_i, h_j, d_ij^2, a_ij)                    a_ij = d_ij^2 at the first layer (EDM's edge attribute)
    e_ij  = sigmoid(phi_inf(m_ij))                           (Satorras eq. 8, the inferred edges)
    x_i  <- x_i + C sum_j (x_i - x_j) / (d_ij + 1) tanh(phi_x(m_ij)) r     (EDM eq. 12; C = 1 / (n - 1))
    h_i  <- h_i + phi_h(h_i, C sum_j e_ij m_ij)

h starts as an embedding of the type rows plus an embedding of the noise level c_noise (invariant conditioning).
The positions only enter through distances and relative differences, so the position output
F_x = x_L - x_0 (the displacement, mean over the real atoms removed) is equivariant to rotations and reflections
and invariant to translations, and the type output F_h = W h_L is invariant (tests/molecules/test_egnn.py).
Padding columns are zero in and out and never reach a real atom; the network treats atoms as a set, so it is
permutation-equivariant. Shapes: B batch, N atom columns, K types, H hidden width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from noisecraft.errors import ConfigError, NoisecraftError, require


@dataclass(frozen=True)
class EGNNConfig:
    """Hyper-parameters of `EGNN`; every field is validated in `__post_init__`."""

    channels: int = 8       # rows of one molecule tensor: 3 positions + K types
    n_atoms: int = 29       # columns N (the largest molecule; set from the data)
    hidden: int = 128       # width H of node features and messages
    layers: int = 6         # EGCL layers
    coord_range: float = 10.0  # r: the largest per-edge position update (tanh-bounded, EDM's coords_range)

    def __post_init__(self) -> None:
        for name in ("channels", "n_atoms", "hidden", "layers"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"EGNNConfig.{name}",
                    f"must be an integer >= 1, got {value!r}")
        require(self.channels >= 4, "EGNNConfig.channels", f"needs 3 position rows and >= 1 type row, got "
                f"{self.channels}")
        require(isinstance(self.coord_range, int | float) and not isinstance(self.coord_range, bool)
                and self.coord_range > 0, "EGNNConfig.coord_range", f"must be a number > 0, got {self.coord_range!r}")

    @property
    def cond_spec(self):
        """No class, text, vector or concat inputs: it reads cond["atom_mask"] (the atoms condition)."""
        from noisecraft.models.conditioning import CondSpec  # here: noisecraft.models imports this module

        return CondSpec()

    def for_data(self, shape: tuple[int, ...]) -> EGNNConfig:
        """This config with channels and n_atoms from a molecule tensor's shape (3 + K, N)."""
        if len(shape) != 2 or shape[0] < 4:
            raise ConfigError(f"the egnn network takes molecule tensors (3 + K, N); the data samples have shape "
                              f"{tuple(shape)} (use dataset 'molecules')")
        return replace(self, channels=int(shape[0]), n_atoms=int(shape[1]))

    def data_shape(self, side=None) -> tuple[int, ...]:
        """(channels, n_atoms) (`side` is not called)."""
        return (self.channels, self.n_atoms)


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, o))


class EGCL(nn.Module):
    """One E(n)-equivariant graph convolutional layer (module docstring)."""

    def __init__(self, hidden: int, coord_range: float) -> None:
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * hidden + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.infer = nn.Linear(hidden, 1)
        self.node = _mlp(2 * hidden, hidden, hidden)
        self.coord = _mlp(hidden, hidden, 1)
        nn.init.xavier_uniform_(self.coord[2].weight, gain=0.001)  # start near the identity map on positions
        nn.init.zeros_(self.coord[2].bias)
        self.coord_range = coord_range

    def forward(self, h: Tensor, x: Tensor, a: Tensor, edges: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, N, H), x (B, N, 3), a (B, N, N, 1) edge attributes, edges (B, N, N, 1) the edge mask,
        norm (B, 1, 1) = 1 / (n - 1)."""
        diff = x[:, :, None] - x[:, None, :]  # (B, N, N, 3): x_i - x_j
        d2 = diff.square().sum(-1, keepdim=True)
        n = h.shape[1]
        pair = torch.cat([h[:, :, None].expand(-1, -1, n, -1), h[:, None].expand(-1, n, -1, -1), d2, a], dim=-1)
        m = self.edge(pair) * edges  # (B, N, N, H)
        e = torch.sigmoid(self.infer(m))
        dist = torch.sqrt(d2 + 1e-8)
        step = torch.tanh(self.coord(m)) * self.coord_range
        x = x + (diff / (dist + 1.0) * step * edges).sum(2) * norm
        h = h + self.node(torch.cat([h, (e * m).sum(2) * norm], dim=-1))
        return h, x


class EGNN(nn.Module):
    """The denoiser network F(x, c_noise, cond) on molecule tensors x (B, 3 + K, N) (module docstring)."""

    def __init__(self, config: EGNNConfig) -> None:
        super().__init__()
        self.config = config
        k, hidden = config.channels - 3, config.hidden
        self.embed = nn.Linear(k, hidden)
        self.time = _mlp(1, hidden, hidden)
        self.layers = nn.ModuleList(EGCL(hidden, config.coord_range) for _ in range(config.layers))
        self.out = _mlp(hidden, hidden, k)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        c = self.config
        if x.ndim != 3 or x.shape[1] != c.channels:
            raise NoisecraftError(f"egnn input: expected (B, {c.channels}, N) molecule tensors, got {tuple(x.shape)}")
        mask = (cond or {}).get("atom_mask")
        if mask is None or tuple(mask.shape) != (x.shape[0], x.shape[2]):
            raise NoisecraftError(f"egnn needs cond['atom_mask'] of shape ({x.shape[0]}, {x.shape[2]}) (the atoms "
                                  f"condition), got {None if mask is None else tuple(mask.shape)}")
        mask = mask.to(x.dtype)
        node = mask[:, :, None]  # (B, N, 1)
        edges = (mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(x.shape[2], dtype=x.dtype, device=x.device)))
        edges = edges[..., None]  # (B, N, N, 1): real pairs i != j
        norm = 1.0 / (mask.sum(1) - 1).clamp(min=1)[:, None, None]
        pos = x[:, :3].transpose(1, 2) * node  # (B, N, 3)
        pos = (pos - pos.sum(1, keepdim=True) / node.sum(1, keepdim=True).clamp(min=1)) * node
        h = (self.embed(x[:, 3:].transpose(1, 2)) + self.time(c_noise.reshape(-1, 1, 1).to(x.dtype))) * node
        a = (pos[:, :, None] - pos[:, None, :]).square().sum(-1, keepdim=True)
        x0 = pos
        for layer in self.layers:
            h, pos = layer(h, pos, a, edges, norm)
            h = h * node
        dx = (pos - x0) * node
        dx = (dx - dx.sum(1, keepdim=True) / node.sum(1, keepdim=True).clamp(min=1)) * node
        dh = self.out(h) * node
        return torch.cat([dx, dh], dim=-1).transpose(1, 2)


EGNN_PRESETS: dict[str, EGNNConfig] = {
    "molecules": EGNNConfig(hidden=64, layers=4),  # sized for CPU training (benchmarks/modalities.md)
}


__all__ = ["EGCL", "EGNN", "EGNNConfig", "EGNN_PRESETS"]
