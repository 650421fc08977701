"""Batched keypoint augmentation in PyTorch: flip with left/right swap, rotation, scale, shift, brightness, contrast.

Works on whole batches on the training device (CPU or GPU): one affine per image applied with
``affine_grid``/``grid_sample`` and to the keypoints with the same matrix. Keypoints that leave
the image become missing (NaN), so the masked loss ignores them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fkd.nn.torch_params import AugmentParams
from fkd.core.keypoints import flip_permutation, point_names

SIZE = 96
HALF = (SIZE - 1) / 2  # pixel centres 0..95 <-> normalised -1..1 (align_corners=True)


def augment_batch(images: torch.Tensor, keypoints: torch.Tensor, p: AugmentParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment float images (B, 1, 96, 96) in [0, 1] and pixel keypoints (B, 2K) with NaN for missing; or
    (B, S, 2K): S sets of keypoints per image (labels and pseudo-labels, say), all moved with their image.

    Random numbers come from ``generator`` (on the images' device) so runs repeat exactly.
    """
    b, dev = images.shape[0], images.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, device=dev, generator=generator) * (hi - lo) + lo

    flip = (torch.rand(b, device=dev, generator=generator) < 0.5) if p.flip else torch.zeros(b, dtype=torch.bool, device=dev)
    angle = uniform(-p.rotate_deg, p.rotate_deg) * (math.pi / 180)
    scale = uniform(1 - p.scale, 1 + p.scale)
    shift = torch.stack([uniform(-p.shift_px, p.shift_px), uniform(-p.shift_px, p.shift_px)], 1) / HALF

    # forward map (input -> output) in normalised coordinates: out = scale * R @ (flip * in) + shift
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    fx = torch.where(flip, -1.0, 1.0)
    fwd = torch.stack([torch.stack([cos * fx, -sin], 1), torch.stack([sin * fx, cos], 1)], 1)  # (B, 2, 2)
    inv = torch.linalg.inv(fwd)
    theta = torch.cat([inv, -(inv @ shift.unsqueeze(2))], 2)  # output -> input, what affine_grid wants
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)

    contrast = uniform(1 - p.contrast, 1 + p.contrast).view(b, 1, 1, 1)
    brightness = uniform(-p.brightness, p.brightness).view(b, 1, 1, 1)
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean + brightness).clamp(0, 1)

    names = point_names(keypoints.shape[-1])
    pts = keypoints.reshape(b, -1, len(names), 2)  # (B, S, K, 2)
    perm = torch.as_tensor(flip_permutation(names), device=dev)
    pts = torch.where(flip.view(b, 1, 1, 1), pts[:, :, perm], pts)
    norm = pts / HALF - 1
    moved = (norm @ fwd.transpose(1, 2).unsqueeze(1) + shift.view(b, 1, 1, 2) + 1) * HALF
    outside = ((moved < 0) | (moved > SIZE - 1)).any(dim=3, keepdim=True)
    moved = torch.where(outside, torch.full_like(moved, float("nan")), moved)
    return out, moved.reshape(keypoints.shape)
