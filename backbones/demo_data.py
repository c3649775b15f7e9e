"""Write the demo dataset: filled shapes on textured backgrounds, in the real OpenMMLab formats.

Deterministic (seeded): the same files on every machine. Layout under --out (default data/demo):

    images/{train,val}/NNNN.png              RGB images, --size × --size
    annotations/instances_{train,val}.json   COCO instances: boxes + polygons, classes circle/square/triangle
    annotations/keypoints_{train,val}.json   COCO keypoints: every triangle, keypoints apex/left/right
    seg/{train,val}/NNNN.png                 mmseg label maps: 0 background, 1 circle, 2 square, 3 triangle
    shapes_keypoints.py                      mmpose dataset metainfo (keypoints, skeleton, sigmas, flip pairs)

Usage: python tools/make_demo_data.py [--out data/demo] [--train 96] [--val 24] [--size 128] [--shifted]
   or: backbones demo-data [same options]   (pip installs, no checkout needed)
Needs numpy and opencv (both come with the OpenMMLab stack).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
KEYPOINTS = ('apex', 'left', 'right')
VERSION = 1  # bump when the generator's output changes

METAINFO = '''dataset_info = dict(
    dataset_name='demo_shapes',
    paper_info=dict(author='backbones', title='demo shapes', container='', year='', homepage=''),
    keypoint_info={
        0: dict(name='apex', id=0, color=[255, 0, 0], type='upper', swap=''),
        1: dict(name='left', id=1, color=[0, 255, 0], type='lower', swap='right'),
        2: dict(name='right', id=2, color=[0, 0, 255], type='lower', swap='left'),
    },
    skeleton_info={
        0: dict(link=('apex', 'left'), id=0, color=[255, 255, 0]),
        1: dict(link=('left', 'right'), id=1, color=[0, 255, 255]),
        2: dict(link=('right', 'apex'), id=2, color=[255, 0, 255]),
    },
    joint_weights=[1.0, 1.0, 1.0],
    sigmas=[0.05, 0.05, 0.05],
)
'''


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field plus fine noise: (size, size, 3) uint8."""
    coarse = rng.uniform(60, 190, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    stripes = 12 * np.sin(np.arange(size) / rng.uniform(2, 6))[None, :, None]
    noise = rng.normal(0, 8, size=(size, size, 3))
    return np.clip(field + stripes + noise, 0, 255).astype(np.uint8)


def shifted_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The shifted task's texture: a tilted checkerboard in two random dark colours plus coarse noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(6, 14)
    u, v = xx * math.cos(angle) + yy * math.sin(angle), -xx * math.sin(angle) + yy * math.cos(angle)
    checker = ((np.floor(u / period) + np.floor(v / period)) % 2)[..., None]
    a, b = rng.uniform(20, 110, size=(2, 3))
    noise = rng.normal(0, 14, size=(size, size, 3))
    return np.clip(a + (b - a) * checker + noise, 0, 255).astype(np.uint8)


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Outline (K, 2) float32 of a shape centred at (cx, cy) with circumradius r."""
    if kind == 'circle':
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    elif kind == 'square':
        t = angle + np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    else:  # triangle, apex up (small tilt) so the keypoint names stay meaningful
        t = -math.pi / 2 + angle * 0.3 + np.array([0, 2 / 3, 4 / 3]) * math.pi
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).astype(np.float32)


def make_image(rng: np.random.Generator, size: int, shifted: bool = False):
    """One image, its label map and its objects. `shifted`: the transfer task (same classes and
    geometry; checkerboard textures, and each class tied to another colour channel, at a lower level)."""
    img = shifted_background(rng, size) if shifted else textured_background(rng, size)
    label = np.zeros((size, size), np.uint8)
    objects, placed = [], []
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(20):
            r = rng.uniform(size * 0.12, size * 0.24)
            cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            if all(math.hypot(cx - px, cy - py) > r + pr + 3 for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cls = int(rng.integers(len(CLASSES)))
        poly = shape_polygon(CLASSES[cls], cx, cy, r, rng.uniform(0, math.pi / 2))
        colour = [int(c) for c in rng.uniform(0, 255, 3)]
        if shifted:
            colour = [int(c) for c in rng.uniform(0, 120, 3)]
            colour[(cls + 1) % 3] = 230
        else:
            colour[cls] = 255  # a class-correlated channel keeps the demo learnable in minutes
        pts = np.round(poly).astype(np.int32)
        cv2.fillPoly(img, [pts], colour)
        cv2.fillPoly(label, [pts], cls + 1)
        objects.append((cls, poly))
    return img, label, objects


def coco_annotations(objects_per_image: list, size: int, split: str) -> tuple[dict, dict]:
    images, inst, kpts = [], [], []
    for image_id, objects in enumerate(objects_per_image):
        images.append(dict(id=image_id, file_name=f'{image_id:04d}.png', width=size, height=size))
        for cls, poly in objects:
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            area = float(cv2.contourArea(poly))
            ann = dict(id=len(inst) + 1, image_id=image_id, category_id=cls + 1, bbox=box, area=area,
                       segmentation=[poly.reshape(-1).round(2).tolist()], iscrowd=0)
            inst.append(ann)
            if CLASSES[cls] == 'triangle':
                apex, left, right = poly[0], poly[2], poly[1]  # angles -90°, +150° (left), +30° (right)
                flat = [v for p in (apex, left, right) for v in (float(p[0]), float(p[1]), 2)]
                kpts.append(dict(ann, id=len(kpts) + 1, category_id=1, keypoints=flat, num_keypoints=3))
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)]
    kp_category = [dict(id=1, name='triangle', supercategory='shape', keypoints=list(KEYPOINTS),
                        skeleton=[[1, 2], [2, 3], [3, 1]])]
    info = dict(description=f'backbones demo shapes ({split}), generator v{VERSION}')
    return (dict(info=info, images=images, annotations=inst, categories=categories),
            dict(info=info, images=images, annotations=kpts, categories=kp_category))


def write_split(out: Path, split: str, count: int, size: int, seed: int, shifted: bool = False) -> None:
    rng = np.random.default_rng(seed)
    (out / 'images' / split).mkdir(parents=True, exist_ok=True)
    (out / 'seg' / split).mkdir(parents=True, exist_ok=True)
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    all_objects = []
    for i in range(count):
        img, label, objects = make_image(rng, size, shifted)
        cv2.imwrite(str(out / 'images' / split / f'{i:04d}.png'), img[:, :, ::-1])
        cv2.imwrite(str(out / 'seg' / split / f'{i:04d}.png'), label)
        all_objects.append(objects)
    instances, keypoints = coco_annotations(all_objects, size, split)
    (out / 'annotations' / f'instances_{split}.json').write_text(json.dumps(instances))
    (out / 'annotations' / f'keypoints_{split}.json').write_text(json.dumps(keypoints))


def make_demo_data(out: str | Path = 'data/demo', train: int = 96, val: int = 24, size: int = 128,
                   shifted: bool = False) -> Path:
    """Write the dataset unless the same version/size/count is already there. Returns its folder.
    `shifted`: the transfer task of `tools/transfer_experiment.py` (other textures and colours, other seeds)."""
    out = Path(out)
    stamp = out / '.demo-data'
    shift = {'shifted': True} if shifted else {}
    wanted = json.dumps(dict(version=VERSION, train=train, val=val, size=size, **shift))
    if stamp.exists() and stamp.read_text() == wanted:
        return out
    write_split(out, 'train', train, size, seed=10 if shifted else 0, shifted=shifted)
    write_split(out, 'val', val, size, seed=11 if shifted else 1, shifted=shifted)
    (out / 'shapes_keypoints.py').write_text(METAINFO)
    stamp.write_text(wanted)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo')
    parser.add_argument('--train', type=int, default=96)
    parser.add_argument('--val', type=int, default=24)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--shifted', action='store_true',
                        help='the shifted transfer task (checkerboard textures, other class colours)')
    args = parser.parse_args(argv)
    out = make_demo_data(args.out, args.train, args.val, args.size, args.shifted)
    print(f'demo data in {out}')


if __name__ == '__main__':
    main()
