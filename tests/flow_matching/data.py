"""The tasks of the flow matching tests: torchcfm's 8 Gaussians → moons and the synthetic
population task of Meta Flow Matching (PAPERS §H.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import make_moons


def eight_gaussians(key, n: int, dtype=jnp.float32):
  """torchcfm's ``sample_8gaussians``: centres on the circle of radius 5, std ``√0.1``."""
  k_mode, k_noise = jax.random.split(key)
  angle = jax.random.randint(k_mode, (n,), 0, 8).astype(dtype) * (jnp.pi / 4)
  centres = 5.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
  return centres + jnp.sqrt(0.1).astype(dtype) * jax.random.normal(k_noise, (n, 2), dtype)


def moons(n: int, seed: int = 0, dtype=np.float32):
  """torchcfm's ``sample_moons``: ``make_moons(noise=0.2) · 3 − 1``."""
  return (make_moons(n, noise=0.2, random_state=seed)[0] * 3 - 1).astype(dtype)


def rotating_populations(seed: int, count: int, n: int):
  """``count`` populations ``N(m_i, 0.3² I₂)``, ``m_i ~ U[−2, 2]²``, each rotated about its
  mean by ``θ_i = ‖m_i‖``. Returns ``x0, x1 (count, n, 2)`` (paired) and the means."""
  rng = np.random.default_rng(seed)
  means = rng.uniform(-2, 2, (count, 2))
  x0 = means[:, None, :] + 0.3 * rng.normal(size=(count, n, 2))
  theta = np.linalg.norm(means, axis=1)
  c, s = np.cos(theta), np.sin(theta)
  rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (count, 2, 2)
  x1 = means[:, None, :] + np.einsum("pij,pnj->pni", rot, x0 - means[:, None, :])
  return x0.astype(np.float32), x1.astype(np.float32), means.astype(np.float32)
