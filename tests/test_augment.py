"""CutMix for segmentation batches: pixels and labels move together; the config switch reaches training."""
from types import SimpleNamespace

import pytest
import torch

from backbones.augment import SegCutMix, cutmix_box


def batch(n=4, h=32, w=24):
    """Channel 0 of image i is i everywhere, its label map is i: the source of every pixel is readable."""
    inputs = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).clone()
    inputs[:, 1] = torch.rand(n, h, w)
    samples = [SimpleNamespace(gt_sem_seg=SimpleNamespace(data=torch.full((1, h, w), i, dtype=torch.long)))
               for i in range(n)]
    return inputs, samples


def test_box_area_and_bounds():
    g = torch.Generator().manual_seed(0)
    for fraction in (0.0, 0.25, 0.5, 1.0):
        for _ in range(50):
            y0, y1, x0, x1 = cutmix_box(40, 30, fraction, g)
            assert 0 <= y0 <= y1 <= 40 and 0 <= x0 <= x1 <= 30
            area = (y1 - y0) * (x1 - x0)
            assert area <= int(40 * fraction ** 0.5) * int(30 * fraction ** 0.5)


def test_labels_follow_their_pixels():
    torch.manual_seed(0)
    inputs, samples = batch()
    original = inputs.clone()
    mixed, samples = SegCutMix(alpha=1.0, prob=1.0)(inputs, samples)
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    assert torch.equal(mixed[:, 0].long(), labels)          # every pixel keeps its own image's label
    assert torch.equal(inputs, original)                     # the caller's tensor is not modified
    pasted = (labels != torch.arange(4).view(4, 1, 1)).float().mean()
    assert 0.0 < pasted < 1.0
    # a pasted pixel carries the partner's other channels too (whole pixels are moved)
    for i in range(4):
        src = labels[i]
        assert torch.equal(mixed[i, 1], original[src, 1, torch.arange(32)[:, None], torch.arange(24)[None]])


def test_prob_zero_and_single_image_are_identity():
    inputs, samples = batch()
    mixed, out = SegCutMix(prob=0.0)(inputs, samples)
    assert mixed is inputs and all(torch.equal(s.gt_sem_seg.data, torch.full((1, 32, 24), i))
                                    for i, s in enumerate(out))
    one, one_samples = batch(n=1)
    assert SegCutMix()(one, one_samples)[0] is one


def test_bad_arguments_and_mismatched_labels():
    with pytest.raises(ValueError, match='alpha > 0'):
        SegCutMix(alpha=0.0)
    inputs, samples = batch()
    samples[0].gt_sem_seg.data = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match='do not match'):
        SegCutMix()(inputs, samples)


def test_config_switch_builds_an_mmseg_preprocessor_that_mixes_only_in_training():
    pytest.importorskip('mmseg')
    import backbones.registry  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules
    register_all_modules()
    pre = MODELS.build(dict(type='backbones.CutMixSegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1],
                            size=(16, 16), pad_val=0, seg_pad_val=255, cutmix=dict(alpha=1.0, prob=1.0)))
    assert isinstance(pre.batch_augments, SegCutMix)

    def data():
        inputs = [torch.full((3, 16, 16), float(i)) for i in range(4)]
        samples = []
        for i in range(4):
            s = SegDataSample()
            s.gt_sem_seg = PixelData(data=torch.full((1, 16, 16), i, dtype=torch.long))
            samples.append(s)
        return dict(inputs=inputs, data_samples=samples)

    torch.manual_seed(1)
    out = pre(data(), training=True)
    labels = torch.stack([s.gt_sem_seg.data[0] for s in out['data_samples']])
    assert torch.equal(out['inputs'][:, 0].long(), labels)
    assert (labels != torch.arange(4).view(4, 1, 1)).any()
    evaluated = pre(data(), training=False)
    assert torch.equal(evaluated['inputs'][:, 0], torch.arange(4.0).view(4, 1, 1).expand(4, 16, 16))
