"""Batch augmentations for training on dense targets (pure PyTorch; OpenMMLab wiring in registry.py).

CutMix (Yun et al., ICCV 2019) is the training-protocol ingredient that Toledo & Martínez ("Inducing
Spatial Locality in Vision Transformers through the Training Protocol") find makes early attention heads
local; `SegCutMix` brings it to segmentation so that their ablation can be rerun on our backbones with a
config switch (`configs/demo/fpn_twins-demo-cutmix_demo-shapes.py`, then
`tools/analysis/attention_locality.py --compare`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch


def cutmix_box(height: int, width: int, area_fraction: float,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """A box (y0, y1, x0, x1) covering about `area_fraction` of the map, centred uniformly at random and
    clipped at the border (as the paper: side ratio sqrt(area_fraction))."""
    ratio = math.sqrt(min(max(area_fraction, 0.0), 1.0))
    box_h, box_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    x0, x1 = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    return y0, y1, x0, x1


class SegCutMix:
    """CutMix for a segmentation batch: image i receives, with probability `prob`, a box of a partner
    image (a random permutation of the batch) and its label map receives the same box of the partner's
    labels, so every pixel keeps its own label (no soft targets needed). The pasted area fraction is
    1 - λ with λ ~ Beta(alpha, alpha).

    Called as `inputs, data_samples = cutmix(inputs, data_samples)` with inputs (N, C, H, W) and
    `data_samples[i].gt_sem_seg.data` (1, H, W) of the same H, W (mmseg pads both to the batch size).
    Randomness comes from torch's global generator (seeded by the runner).
    """

    def __init__(self, alpha: float = 1.0, prob: float = 1.0):
        if alpha <= 0 or not 0.0 <= prob <= 1.0:
            raise ValueError(f'SegCutMix needs alpha > 0 and 0 <= prob <= 1, got alpha={alpha}, prob={prob}')
        self.alpha, self.prob = float(alpha), float(prob)
        self._beta = torch.distributions.Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

    def __call__(self, inputs: torch.Tensor, data_samples: Sequence[Any]) -> tuple[torch.Tensor, Sequence[Any]]:
        n, _, height, width = inputs.shape
        if n < 2 or self.prob == 0.0:
            return inputs, data_samples
        labels = [sample.gt_sem_seg.data for sample in data_samples]
        if any(tuple(label.shape[-2:]) != (height, width) for label in labels):
            raise ValueError(f'SegCutMix: label maps {[tuple(l.shape) for l in labels]} do not match the '
                             f'inputs {tuple(inputs.shape)}; pad both to one size first')
        partners = torch.randperm(n)
        mixed_inputs, mixed_labels = inputs.clone(), [label.clone() for label in labels]
        for i in range(n):
            if float(torch.rand(())) >= self.prob:
                continue
            j = int(partners[i])
            y0, y1, x0, x1 = cutmix_box(height, width, 1.0 - float(self._beta.sample()))
            mixed_inputs[i, :, y0:y1, x0:x1] = inputs[j, :, y0:y1, x0:x1]
            mixed_labels[i][..., y0:y1, x0:x1] = labels[j][..., y0:y1, x0:x1]
        for sample, label in zip(data_samples, mixed_labels):
            sample.gt_sem_seg.data = label
        return mixed_inputs, data_samples

    def __repr__(self) -> str:
        return f'SegCutMix(alpha={self.alpha}, prob={self.prob})'
