"""The shape families of the embedded corpus, built with ``trimesh.creation`` from random proportions.

Each family is a function ``rng -> trimesh.Trimesh`` in a canonical frame (axis of symmetry along z).
Proportion ranges keep the families apart (a capsule is always clearly longer than wide, a torus
always has a hole), so a shape's family can be told from its points alone. :func:`make_shape` adds the
random rotation and samples the surface.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import trimesh

from mfkit_points.geometry import Rotation, normalize, random_rotation_matrices

SECTIONS = 48


def box(rng: np.random.Generator) -> trimesh.Trimesh:
    """A box with three independent side lengths in [0.35, 1]."""
    return trimesh.creation.box(extents=rng.uniform(0.35, 1.0, 3))


def ellipsoid(rng: np.random.Generator) -> trimesh.Trimesh:
    """A unit icosphere scaled by three independent semi-axes in [0.4, 1]."""
    mesh = trimesh.creation.icosphere(subdivisions=3)
    mesh.apply_scale(rng.uniform(0.4, 1.0, 3))
    return mesh


def cylinder(rng: np.random.Generator) -> trimesh.Trimesh:
    """A closed cylinder: radius in [0.2, 0.6], height in [0.5, 1.6]."""
    return trimesh.creation.cylinder(radius=rng.uniform(0.2, 0.6), height=rng.uniform(0.5, 1.6), sections=SECTIONS)


def cone(rng: np.random.Generator) -> trimesh.Trimesh:
    """A closed cone: base radius in [0.3, 0.7], height in [0.6, 1.5]."""
    return trimesh.creation.cone(radius=rng.uniform(0.3, 0.7), height=rng.uniform(0.6, 1.5), sections=SECTIONS)


def capsule(rng: np.random.Generator) -> trimesh.Trimesh:
    """A capsule: radius in [0.2, 0.4], straight part 1.5 to 4 radii long."""
    radius = rng.uniform(0.2, 0.4)
    return trimesh.creation.capsule(height=radius * rng.uniform(1.5, 4.0), radius=radius)


def torus(rng: np.random.Generator) -> trimesh.Trimesh:
    """A ring torus: major radius 1, tube radius in [0.15, 0.45]."""
    return trimesh.creation.torus(1.0, rng.uniform(0.15, 0.45), major_sections=SECTIONS, minor_sections=24)


def vase(rng: np.random.Generator) -> trimesh.Trimesh:
    """A vase: a smooth random profile r(h) = r0 (1 + a sin(2 pi f h / H + phi) + b h / H), 0 <= h <= H,
    revolved about z, with a closed bottom and an open top."""
    height = rng.uniform(1.0, 1.6)
    heights = np.linspace(0.0, height, 24)
    r0, a, f, phi, b = (rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.5), rng.uniform(0.6, 1.2),
                        rng.uniform(0, 2 * np.pi), rng.uniform(-0.4, 0.4))
    radius = r0 * (1 + a * np.sin(2 * np.pi * f * heights / height + phi) + b * heights / height)
    profile = np.concatenate([[[0.0, 0.0]], np.stack([np.clip(radius, 0.08, None), heights], axis=1)])
    return trimesh.creation.revolve(profile, sections=SECTIONS)


FAMILIES: dict[str, Callable[[np.random.Generator], trimesh.Trimesh]] = {
    "box": box, "ellipsoid": ellipsoid, "cylinder": cylinder, "cone": cone, "capsule": capsule, "torus": torus,
    "vase": vase,
}


def make_shape(family: str, seed: tuple[int, ...], points: int, rotation: Rotation) -> np.ndarray:
    """One normalised cloud (points, 3) of ``family`` drawn from ``seed`` (a tuple of ints, so each shape
    has its own stream and the corpus does not depend on the order it is built in)."""
    rng = np.random.default_rng(seed)
    mesh = FAMILIES[family](rng)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    matrix = np.eye(4)
    matrix[:3, :3] = random_rotation_matrices(1, rotation, "z", generator)[0].double().numpy()
    mesh.apply_transform(matrix)
    samples, _ = trimesh.sample.sample_surface(mesh, points, seed=int(rng.integers(2 ** 62)))
    return normalize(samples)
