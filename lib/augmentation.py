"""Data augmentation: random geometric and colour transforms, cutout, mixup and CutMix, test-time averaging.

Images are floats in [0, 1], channels first: one image (C, H, W) or a batch (N, C, H, W).
Every transform is split in two: a ``draw_*`` function draws its random parameters with a
``np.random.Generator`` (cheap NumPy arrays, one row per example), and an apply function takes
them. The same parameters go to the NumPy reference (first section) and to the torch path
(``*_torch``, one vectorized call per (N, C, H, W) batch on any device), so the two can be
compared exactly. A parameter is either one value for every image or one per example (leading N).

Geometry (pixel (i, j) is row i, column j; its centre sits at (i, j), the image centre at
((H − 1)/2, (W − 1)/2)):

    flip:        out[i, j] = x[i, W − 1 − j]
    pad + crop:  out[i, j] = x_pad[top + i, left + j],  x_pad = x with ``padding`` fill pixels on each side
    bilinear resize to (H', W'), along each axis (torch's align_corners=False):
                 src = max((dst + 0.5)·in/out − 0.5, 0)                                          (1)
                 i0 = ⌊src⌋, i1 = min(i0 + 1, in − 1), λ = src − i0
                 out[dst] = (1 − λ)·x[i0] + λ·x[i1]                                              (2)
    rotation by θ counterclockwise about the centre: output pixel (y, x), centred coordinates,
    samples the source point
                 x_s = cos θ·x − sin θ·y,   y_s = sin θ·x + cos θ·y                               (3)
    with the four-tap bilinear weights of (2) in both axes; taps outside the image count as 0.

Colour (torchvision's formulas; every result is clamped to [0, 1]):

    grey         = 0.2989·R + 0.587·G + 0.114·B
    brightness b:  b·x                      (a blend with black)
    contrast c:    c·x + (1 − c)·mean(grey) (a blend with the image's mean grey level)
    saturation s:  s·x + (1 − s)·grey       (a blend with the grey image)
    hue shift δ:   RGB → HSV, h ← (h + δ) mod 1, HSV → RGB

Mixing (labels as probabilities, one-hot for hard labels), with a random permutation π of the batch:

    mixup  (Zhang et al. 2018):  x̃ = λx + (1 − λ)x[π],  ỹ = λy + (1 − λ)y[π],  λ ~ Beta(α, α)      (4)
    CutMix (Yun et al. 2019):    x̃ = x with a box pasted from x[π],  ỹ = λy + (1 − λ)y[π],
                                 λ = 1 − box area / (H·W)   (the box as clipped to the image)        (5)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.checks import check_array, check_int, check_positive, check_probability
from lib.data import Splits
from lib.models import small_cnn
from lib.train import accuracy_on_test, train_seeds

__all__ = [
    # draws
    "draw_flips", "draw_crop_offsets", "draw_resized_crop_boxes", "draw_angles", "draw_color_jitter",
    "draw_cutout_centres", "draw_mixup", "draw_cutmix",
    # NumPy reference
    "hflip", "pad_crop", "resize_bilinear", "resized_crop", "rotate", "rgb_to_grayscale",
    "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue", "color_jitter", "cutout",
    "one_hot", "mixup", "cutmix", "ten_crop",
    # torch path
    "hflip_torch", "pad_crop_torch", "resize_bilinear_torch", "resized_crop_torch", "rotate_torch",
    "rgb_to_grayscale_torch", "adjust_brightness_torch", "adjust_contrast_torch", "adjust_saturation_torch",
    "adjust_hue_torch", "color_jitter_torch", "cutout_torch", "mixup_torch", "cutmix_torch", "ten_crop_torch",
    # pipeline and test-time augmentation
    "RandomFlip", "RandomPadCrop", "RandomResizedCrop", "RandomRotation", "ColorJitter", "Cutout", "Mixup",
    "CutMix", "Compose", "tta_predict", "ten_crop_predict",
    # the chapter's experiment
    "DIGITS_RECIPE", "train_digits_cnn", "AugmentationRuns", "train_augmentations",
]

GREY_WEIGHTS = (0.2989, 0.587, 0.114)   # torchvision's rgb_to_grayscale (ITU-R 601, rounded)
IDENTITY_JITTER = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation factors, hue shift
# HSV → RGB: for each sector ⌊6h⌋ = 0..5, which of (v, p, q, t) becomes R, G and B
HSV_SECTORS = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


# ---------------------------------------------------------------------------------------
# Argument checks shared by both paths
# ---------------------------------------------------------------------------------------

def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a np.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _check_hw(name: str, value) -> tuple:
    """(height, width) from a pair of positive ints, or one int for a square."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{name}: expected (height, width) or one int, got {value!r}")
    return (check_int(f"{name}[0]", value[0], minimum=1), check_int(f"{name}[1]", value[1], minimum=1))


def _check_range(name: str, value, low_bound: float, high_bound: float) -> tuple:
    """An increasing pair (low, high) inside (low_bound, high_bound]."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{name}: expected a pair (low, high), got {value!r}")
    low, high = (check_positive(f"{name}[{k}]", v, allow_zero=True) for k, v in enumerate(value))
    if not low_bound < low <= high <= high_bound:
        raise ValueError(f"{name}: expected {low_bound} < low <= high <= {high_bound}, got {tuple(value)}")
    return low, high


def _check_images(name: str, x, torch_batch: bool = False):
    """x as a float array of one image (C, H, W) or a batch (N, C, H, W); torch: a batch only."""
    if torch_batch:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch tensor (N, C, H, W), got {type(x).__name__}")
        return check_array(name, x, ndim=4)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array (C, H, W) or (N, C, H, W), got {type(x).__name__}")
    return check_array(name, x, ndim=(3, 4))


def _check_param_shape(name: str, shape, n: int, tail: tuple, single: bool) -> None:
    """A parameter is one value for every image (shape ``tail``) or one per example ((n,) + tail)."""
    allowed = [tuple(tail)] if single else [tuple(tail), (n,) + tuple(tail)]
    if tuple(shape) not in allowed:
        expected = " or ".join(str(s) for s in allowed)
        raise ValueError(f"{name}: expected shape {expected} (one per example), got {tuple(shape)}")


def _as_batch(name: str, x: np.ndarray) -> tuple:
    """(x as (N, C, H, W), whether it was a single image)."""
    x = _check_images(name, x)
    return (x[None], True) if x.ndim == 3 else (x, False)


def _param(name: str, value, n: int, single: bool, tail: tuple = (), kind: str = "float") -> np.ndarray:
    """A NumPy parameter with one row per example: shape (n,) + tail."""
    value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    _check_kind(name, value.dtype, kind)
    _check_param_shape(name, value.shape, n, tail, single)
    return np.broadcast_to(value, (n,) + tuple(tail)).astype(np.float64 if kind == "float" else value.dtype)


def _param_torch(name: str, value, x: torch.Tensor, tail: tuple = (), kind: str = "float") -> torch.Tensor:
    """A tensor parameter on x's device with one row per example: shape (N,) + tail."""
    value = torch.as_tensor(value, device=x.device)
    _check_kind(name, value.dtype, kind)
    _check_param_shape(name, value.shape, x.shape[0], tail, single=False)
    value = value.expand((x.shape[0],) + tuple(tail))
    return value.to(x.dtype) if kind == "float" else value


def _check_kind(name: str, dtype, kind: str) -> None:
    is_bool = dtype in (np.bool_, torch.bool)
    is_int = not is_bool and (dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
                              if isinstance(dtype, torch.dtype) else np.issubdtype(dtype, np.integer))
    ok = {"bool": is_bool, "int": is_int, "float": not is_bool}[kind]
    if not ok:
        raise TypeError(f"{name}: expected {kind} values, got dtype {dtype}")


def _single_out(out: np.ndarray, single: bool) -> np.ndarray:
    return out[0] if single else out


def _check_fill(fill) -> float:
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
        raise TypeError(f"fill: expected a finite real number, got {fill!r}")
    return float(fill)


# ---------------------------------------------------------------------------------------
# Draws: the random parameters, as NumPy arrays
# ---------------------------------------------------------------------------------------

def draw_flips(n: int, p: float = 0.5, *, rng: np.random.Generator) -> np.ndarray:
    """Which of ``n`` images to flip: bool (n,), each True with probability ``p``."""
    n, p, rng = check_int("n", n, minimum=1), check_probability("p", p), _check_rng(rng)
    return rng.random(n) < p


def draw_crop_offsets(n: int, image_hw, crop_hw, padding: int = 0, *, rng: np.random.Generator) -> np.ndarray:
    """Crop positions: int (n, 2), rows (top, left) in the image padded by ``padding`` on each side,
    uniform over all positions where the crop fits (as torchvision's RandomCrop)."""
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    (height, width), (crop_h, crop_w) = _padded_hw(image_hw, padding), _check_hw("crop_hw", crop_hw)
    _check_crop_fits(crop_h, crop_w, height, width, padding)
    return np.stack([rng.integers(0, height - crop_h + 1, n), rng.integers(0, width - crop_w + 1, n)], axis=1)


def _padded_hw(image_hw, padding) -> tuple:
    height, width = _check_hw("image_hw", image_hw)
    padding = check_int("padding", padding, minimum=0)
    return height + 2 * padding, width + 2 * padding


def _check_crop_fits(crop_h: int, crop_w: int, height: int, width: int, padding: int) -> None:
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop_hw: expected a crop inside the padded image {(height, width)} "
                         f"(padding {padding}), got {(crop_h, crop_w)}")


def draw_resized_crop_boxes(n: int, image_hw, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *,
                            rng: np.random.Generator, attempts: int = 10) -> np.ndarray:
    """Boxes for RandomResizedCrop: int (n, 4), rows (top, left, height, width); torchvision's
    ``RandomResizedCrop.get_params`` for each example:

      area share a ~ U(scale), log aspect ratio log r ~ U(log ratio)
      w = round(√(a·H·W·r)), h = round(√(a·H·W/r));  accepted if the box fits, then placed uniformly
      after ``attempts`` rejected tries: the central crop, its ratio w/h clamped into ``ratio``.

    All attempts are drawn at once (an (n, attempts) array), so the stream of draws differs
    from torchvision's; the distribution is the same.
    """
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    attempts = check_int("attempts", attempts, minimum=1)
    height, width = _check_hw("image_hw", image_hw)
    scale = _check_range("scale", scale, 0.0, 1.0)
    ratio = _check_range("ratio", ratio, 0.0, math.inf)
    target_area = height * width * rng.uniform(*scale, size=(n, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, attempts)))
    w = np.round(np.sqrt(target_area * aspect)).astype(np.int64)    # round half to even, as Python's round
    h = np.round(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = np.argmax(fits, axis=1)                                  # the first accepted attempt
    found = fits.any(axis=1)
    centre_h, centre_w = _central_box_hw(height, width, ratio)
    box_h = np.where(found, h[np.arange(n), first], centre_h)
    box_w = np.where(found, w[np.arange(n), first], centre_w)
    top = np.where(found, rng.integers(0, height - box_h + 1), (height - box_h) // 2)
    left = np.where(found, rng.integers(0, width - box_w + 1), (width - box_w) // 2)
    return np.stack([top, left, box_h, box_w], axis=1)


def _central_box_hw(height: int, width: int, ratio: tuple) -> tuple:
    """torchvision's fallback: the whole image, cut down to the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return int(round(width / ratio[0])), width
    if in_ratio > ratio[1]:
        return height, int(round(height * ratio[1]))
    return height, width


def draw_angles(n: int, degrees, *, rng: np.random.Generator) -> np.ndarray:
    """Rotation angles in degrees, float (n,), uniform in [−degrees, degrees] or in a pair (low, high)."""
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    low, high = _angle_range(degrees)
    return rng.uniform(low, high, n)


def _angle_range(degrees) -> tuple:
    if isinstance(degrees, (tuple, list)):
        if len(degrees) != 2 or not all(isinstance(d, numbers.Real) for d in degrees) or degrees[0] > degrees[1]:
            raise ValueError(f"degrees: expected a number >= 0 or an increasing pair (low, high), got {degrees!r}")
        return float(degrees[0]), float(degrees[1])
    degrees = check_positive("degrees", degrees, allow_zero=True)
    return -degrees, degrees


def draw_color_jitter(n: int, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                      hue: float = 0.0, *, rng: np.random.Generator) -> np.ndarray:
    """Colour-jitter parameters, float (n, 4): columns brightness, contrast and saturation factors,
    each uniform in [max(0, 1 − v), 1 + v], and a hue shift uniform in [−hue, hue] (hue <= 0.5),
    as torchvision's ColorJitter. A strength 0 gives the identity (factor 1, shift 0).

    They are applied in the fixed order brightness, contrast, saturation, hue (``color_jitter``);
    torchvision's ColorJitter instead draws a random order of the four on every call.
    """
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    strengths = [check_positive(name, v, allow_zero=True)
                 for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))]
    hue = check_positive("hue", hue, allow_zero=True)
    if hue > 0.5:
        raise ValueError(f"hue: expected a shift range in [0, 0.5] (a half turn of the colour wheel), got {hue}")
    columns = [rng.uniform(max(0.0, 1.0 - v), 1.0 + v, n) for v in strengths]
    return np.stack(columns + [rng.uniform(-hue, hue, n)], axis=1)


def draw_cutout_centres(n: int, image_hw, *, rng: np.random.Generator) -> np.ndarray:
    """Cutout centres, int (n, 2), rows (row, col) uniform over the image (DeVries & Taylor 2017):
    the square may reach past the border, where it is clipped."""
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    height, width = _check_hw("image_hw", image_hw)
    return np.stack([rng.integers(0, height, n), rng.integers(0, width, n)], axis=1)


def draw_mixup(n: int, alpha: float, *, rng: np.random.Generator) -> tuple:
    """(λ, π) for mixup: one λ ~ Beta(α, α) for the whole batch and a permutation π (int (n,)) of it,
    as Zhang et al.'s reference code draws them."""
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    alpha = check_positive("alpha", alpha)
    return float(rng.beta(alpha, alpha)), rng.permutation(n)


def draw_cutmix(n: int, image_hw, alpha: float = 1.0, *, rng: np.random.Generator) -> tuple:
    """(box, π) for CutMix (Yun et al. 2019): λ ~ Beta(α, α), then a box of side
    ⌊H·√(1 − λ)⌋ × ⌊W·√(1 − λ)⌋ centred at a uniform pixel, clipped to the image:
    box int (4,) = (top, left, height, width); π a permutation of the batch, int (n,).

    The reference code spans centre ± ⌊side/2⌋, one pixel short of the side when it is odd; here
    the box starts at centre − ⌊side/2⌋ and has the full side before clipping.
    """
    n, rng = check_int("n", n, minimum=1), _check_rng(rng)
    height, width = _check_hw("image_hw", image_hw)
    alpha = check_positive("alpha", alpha)
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(n)
    side_h, side_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    centre = (rng.integers(0, height), rng.integers(0, width))
    top, bottom = _clipped_span(centre[0], side_h, height)
    left, right = _clipped_span(centre[1], side_w, width)
    return np.array([top, left, bottom - top, right - left]), perm


def _clipped_span(centre, side: int, size: int) -> tuple:
    """[start, stop) of a span of ``side`` pixels centred at ``centre``, clipped to [0, size)."""
    start = centre - side // 2
    return start.clip(0, size), (start + side).clip(0, size)     # .clip: NumPy and torch alike


# ---------------------------------------------------------------------------------------
# NumPy reference: geometry
# ---------------------------------------------------------------------------------------

def hflip(x: np.ndarray, flip=None) -> np.ndarray:
    """Mirror left-right: out[..., i, j] = x[..., i, W − 1 − j]. ``flip``: None flips every image,
    else bool, one per example (N,), says which."""
    batch, single = _as_batch("x", x)
    mirrored = batch[..., ::-1]
    if flip is not None:
        flip = _param("flip", flip, len(batch), single, kind="bool")
        mirrored = np.where(flip[:, None, None, None], mirrored, batch)
    return _single_out(mirrored.copy(), single)


def pad_crop(x: np.ndarray, offsets, crop_hw, padding: int = 0, fill: float = 0.0) -> np.ndarray:
    """Pad each side by ``padding`` pixels of ``fill``, then crop ``crop_hw`` at ``offsets``
    (top, left) in the padded image: int (2,) or one per example (N, 2). Returns (N, C, h, w)."""
    batch, single = _as_batch("x", x)
    crop_h, crop_w = _check_crop_args(batch.shape, crop_hw, padding)
    offsets = _check_offsets(_param("offsets", offsets, len(batch), single, (2,), kind="int"),
                             batch.shape, crop_h, crop_w, padding)
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    padded = np.pad(batch, pad, constant_values=_check_fill(fill))
    crops = [image[:, top:top + crop_h, left:left + crop_w] for image, (top, left) in zip(padded, offsets)]
    return _single_out(np.stack(crops), single)


def _check_crop_args(shape, crop_hw, padding) -> tuple:
    crop_h, crop_w = _check_hw("crop_hw", crop_hw)
    height, width = _padded_hw(tuple(shape[-2:]), padding)
    _check_crop_fits(crop_h, crop_w, height, width, padding)
    return crop_h, crop_w


def _check_offsets(offsets, shape, crop_h: int, crop_w: int, padding: int):
    """Offsets (N, 2) that keep the crop inside the padded image (NumPy arrays or tensors)."""
    max_top, max_left = shape[-2] + 2 * padding - crop_h, shape[-1] + 2 * padding - crop_w
    if (offsets < 0).any() or (offsets[:, 0] > max_top).any() or (offsets[:, 1] > max_left).any():
        raise ValueError(f"offsets: expected 0 <= top <= {max_top} and 0 <= left <= {max_left} "
                         f"for a crop {(crop_h, crop_w)} of the padded image")
    return offsets


def _bilinear_taps(in_size: int, out_size: int) -> tuple:
    """Equations (1)-(2) along one axis: the two source indices and the weight λ of the second."""
    scale = in_size / out_size
    src = np.maximum(scale * (np.arange(out_size) + 0.5) - 0.5, 0.0)     # (1), clamped at 0
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)                                   # the last row repeats
    return i0, i1, src - i0


def resize_bilinear(x: np.ndarray, size_hw) -> np.ndarray:
    """Bilinear resize to ``size_hw`` with equations (1)-(2) along rows, then columns; equals
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``. No antialiasing:
    two taps are no low-pass filter, so any shrink (2x included) aliases detail finer than the
    output can show (periods under 2 output pixels); past 2x the taps also skip source pixels.
    torchvision's resize antialiases by default."""
    batch, single = _as_batch("x", x)
    out_h, out_w = _check_hw("size_hw", size_hw)
    r0, r1, row_weight = _bilinear_taps(batch.shape[2], out_h)
    c0, c1, col_weight = _bilinear_taps(batch.shape[3], out_w)
    rows = (1 - row_weight)[:, None] * batch[:, :, r0] + row_weight[:, None] * batch[:, :, r1]   # (2) down the rows
    out = (1 - col_weight) * rows[..., c0] + col_weight * rows[..., c1]                           # (2) across
    return _single_out(out, single)


def resized_crop(x: np.ndarray, boxes, size_hw) -> np.ndarray:
    """Crop each image to its box (top, left, height, width), int (4,) or (N, 4), then resize it
    bilinearly to ``size_hw``: torchvision's ``resized_crop(..., antialias=False)``."""
    batch, single = _as_batch("x", x)
    boxes = _check_boxes(_param("boxes", boxes, len(batch), single, (4,), kind="int"), batch.shape)
    out = [resize_bilinear(image[:, top:top + h, left:left + w], size_hw)
           for image, (top, left, h, w) in zip(batch, boxes)]
    return _single_out(np.stack(out), single)


def _check_boxes(boxes, shape):
    """Boxes (N, 4) of at least one pixel inside an image of ``shape`` (NumPy arrays or tensors)."""
    top, left, h, w = boxes.T if isinstance(boxes, np.ndarray) else boxes.unbind(1)
    inside = (top >= 0) & (left >= 0) & (h >= 1) & (w >= 1) & (top + h <= shape[-2]) & (left + w <= shape[-1])
    if not inside.all():
        raise ValueError(f"boxes: expected (top, left, height, width) boxes of at least one pixel inside "
                         f"the {tuple(shape[-2:])} image")
    return boxes


def _rotation_sources(angles: np.ndarray, height: int, width: int) -> tuple:
    """Equation (3): source (row, col) of every output pixel, each (N, H, W)."""
    theta = np.deg2rad(angles)[:, None, None]
    y = np.arange(height)[:, None] - (height - 1) / 2
    x = np.arange(width)[None, :] - (width - 1) / 2
    cols = np.cos(theta) * x - np.sin(theta) * y + (width - 1) / 2
    rows = np.sin(theta) * x + np.cos(theta) * y + (height - 1) / 2
    return rows, cols


def _bilinear_sample(batch: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple:
    """Four-tap bilinear samples of ``batch`` at (rows, cols), taps outside the image as 0 (grid_sample's
    padding_mode="zeros"): (samples (N, C, H', W'), the weight that fell inside the image (N, 1, H', W'))."""
    n, _, height, width = batch.shape
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    dr, dc = rows - r0, cols - c0
    samples, inside_weight = 0.0, 0.0
    for r, row_weight in ((r0, 1 - dr), (r0 + 1, dr)):
        for c, col_weight in ((c0, 1 - dc), (c0 + 1, dc)):
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            weight = (row_weight * col_weight * inside)[:, None]
            taps = batch[np.arange(n)[:, None, None], :, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
            samples = samples + weight * np.moveaxis(taps, -1, 1)          # taps come out (N, H', W', C)
            inside_weight = inside_weight + weight
    return samples, inside_weight


def rotate(x: np.ndarray, angles, fill: float | None = 0.0) -> np.ndarray:
    """Rotate counterclockwise by ``angles`` degrees (one, or one per example (N,)) about the image
    centre, bilinear sampling, same size (expand=False): torchvision's
    ``rotate(x, angle, interpolation=BILINEAR, fill=fill)``.

    Out-of-image samples, as torchvision treats them: the image is sampled with zero padding (s),
    and so is a channel of ones (m, the weight that fell inside the image). ``fill=None`` returns s.
    A number returns m·s + (1 − m)·fill: inside the image m = 1 and this is s; outside it is fill;
    in the one-pixel band along the border the image part is weighted by m twice, so with fill=0
    those pixels come out darker than with fill=None.
    """
    batch, single = _as_batch("x", x)
    angles = _param("angles", angles, len(batch), single)
    samples, inside_weight = _bilinear_sample(batch, *_rotation_sources(angles, *batch.shape[2:]))
    if fill is not None:
        fill = _check_fill(fill)
        samples = inside_weight * (samples - fill) + fill
    return _single_out(samples, single)


def ten_crop(x: np.ndarray, size_hw) -> np.ndarray:
    """The ten crops of size ``size_hw``: top-left, top-right, bottom-left, bottom-right, centre, then
    the same five of the mirrored image (torchvision's ten_crop order), stacked: (10, ...) + x's shape
    with the crop's height and width."""
    batch, single = _as_batch("x", x)
    crops = _five_crops(batch, size_hw) + _five_crops(batch[..., ::-1], size_hw)
    return np.stack([_single_out(c.copy(), single) for c in crops])


def _five_crops(batch, size_hw) -> list:
    """Corners then centre, for NumPy arrays and tensors alike; the centre is torchvision's
    (top, left) = (round((H − h)/2), round((W − w)/2)), rounding half to even."""
    crop_h, crop_w = _check_crop_args(batch.shape, size_hw, 0)
    height, width = batch.shape[-2:]
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w)]
    centre = (int(round((height - crop_h) / 2)), int(round((width - crop_w) / 2)))
    return [batch[..., top:top + crop_h, left:left + crop_w] for top, left in corners + [centre]]


# ---------------------------------------------------------------------------------------
# NumPy reference: colour
# ---------------------------------------------------------------------------------------

def _check_colour_images(x) -> tuple:
    batch, single = _as_batch("x", x)
    if batch.shape[1] not in (1, 3):
        raise ValueError(f"x: expected 1 (grey) or 3 (RGB) channels, got {batch.shape[1]}")
    return batch, single


def _grey(batch):
    """Grey levels (N, 1, H, W) of RGB images, for NumPy arrays and tensors alike; grey images pass as they are."""
    if batch.shape[1] == 1:
        return batch
    r, g, b = batch[:, 0:1], batch[:, 1:2], batch[:, 2:3]
    return GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b


def _factors(name: str, value, batch, single) -> np.ndarray:
    """Per-example non-negative factors, shaped (N, 1, 1, 1) to broadcast over an image."""
    factors = _param(name, value, len(batch), single)
    if (factors < 0).any():
        raise ValueError(f"{name}: expected factors >= 0, got {factors.min()}")
    return factors[:, None, None, None]


def rgb_to_grayscale(x: np.ndarray) -> np.ndarray:
    """Grey level 0.2989·R + 0.587·G + 0.114·B (torchvision's weights): (…, 3, H, W) → (…, 1, H, W)."""
    batch, single = _check_colour_images(x)
    return _single_out(_grey(batch).copy(), single)


def _blend(batch, other, ratio):
    """ratio·x + (1 − ratio)·other, clamped to [0, 1] (NumPy arrays and tensors alike)."""
    return (ratio * batch + (1 - ratio) * other).clip(0.0, 1.0)


def adjust_brightness(x: np.ndarray, factor) -> np.ndarray:
    """factor·x clamped to [0, 1]: a blend with black. ``factor`` >= 0, one or one per example (N,)."""
    batch, single = _check_colour_images(x)
    return _single_out(_blend(batch, 0.0, _factors("factor", factor, batch, single)), single)


def adjust_contrast(x: np.ndarray, factor) -> np.ndarray:
    """A blend with each image's mean grey level (one number per image): factor 0 gives flat grey."""
    batch, single = _check_colour_images(x)
    mean_grey = _grey(batch).mean(axis=(1, 2, 3), keepdims=True)
    return _single_out(_blend(batch, mean_grey, _factors("factor", factor, batch, single)), single)


def adjust_saturation(x: np.ndarray, factor) -> np.ndarray:
    """A blend with the grey image: factor 0 gives grey, 1 the image, > 1 stronger colours.
    Grey images (C = 1) are returned unchanged, as torchvision does."""
    batch, single = _check_colour_images(x)
    factor = _factors("factor", factor, batch, single)
    return _single_out(batch.copy() if batch.shape[1] == 1 else _blend(batch, _grey(batch), factor), single)


def _rgb_to_hsv(batch: np.ndarray) -> tuple:
    """Hue, saturation and value (each (N, H, W)) of RGB images (N, 3, H, W)."""
    r, g, b = batch[:, 0], batch[:, 1], batch[:, 2]
    value, chroma = batch.max(axis=1), batch.max(axis=1) - batch.min(axis=1)
    grey = chroma == 0                                   # no colour: hue and saturation are 0
    safe_chroma = np.where(grey, 1.0, chroma)
    saturation = np.where(grey, 0.0, chroma / np.where(value == 0, 1.0, value))
    hue = np.select([grey, value == r, value == g],
                    [0.0, (g - b) / safe_chroma, 2 + (b - r) / safe_chroma], 4 + (r - g) / safe_chroma)
    return np.mod(hue / 6, 1.0), saturation, value


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """RGB images (N, 3, H, W) from hue, saturation and value: the sector ⌊6h⌋ picks which of
    v, p = v(1 − s), q = v(1 − s·f), t = v(1 − s(1 − f)) each channel takes (f = 6h − ⌊6h⌋)."""
    sector = np.floor(hue * 6)
    f = hue * 6 - sector
    p = np.clip(value * (1 - saturation), 0, 1)
    q = np.clip(value * (1 - saturation * f), 0, 1)
    t = np.clip(value * (1 - saturation * (1 - f)), 0, 1)
    candidates = np.stack([value, p, q, t], axis=1)                       # (N, 4, H, W)
    choice = np.moveaxis(HSV_SECTORS[sector.astype(np.int64) % 6], -1, 1)  # (N, 3, H, W)
    return np.take_along_axis(candidates, choice, axis=1)


def adjust_hue(x: np.ndarray, shift) -> np.ndarray:
    """Turn the colour wheel: RGB → HSV, h ← (h + shift) mod 1, HSV → RGB. ``shift`` in [−0.5, 0.5],
    one or one per example (N,). Grey images (C = 1) are returned unchanged, as torchvision does."""
    batch, single = _check_colour_images(x)
    shift = _check_hue_shift(_param("shift", shift, len(batch), single))
    if batch.shape[1] == 1:
        return _single_out(batch.copy(), single)
    hue, saturation, value = _rgb_to_hsv(batch)
    return _single_out(_hsv_to_rgb(np.mod(hue + shift[:, None, None], 1.0), saturation, value), single)


def _check_hue_shift(shift):
    if (shift < -0.5).any() or (shift > 0.5).any():
        raise ValueError("shift: expected hue shifts in [-0.5, 0.5] (a half turn each way)")
    return shift


def color_jitter(x: np.ndarray, factors) -> np.ndarray:
    """Brightness, contrast, saturation, then hue, with ``factors`` (4,) or (N, 4) as
    ``draw_color_jitter`` returns them. A column that is the identity for every example is skipped
    (as torchvision skips a jitter of strength 0), which saves the HSV round trip."""
    batch, single = _check_colour_images(x)
    factors = _param("factors", factors, len(batch), single, (4,))
    steps = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for column, (step, identity) in enumerate(zip(steps, IDENTITY_JITTER)):
        if (factors[:, column] != identity).any():
            batch = step(batch, factors[:, column])
    return _single_out(batch.copy(), single)


# ---------------------------------------------------------------------------------------
# NumPy reference: cutout, mixup, CutMix
# ---------------------------------------------------------------------------------------

def _cutout_spans(centres, size: int, height: int, width: int) -> tuple:
    """Rows [top, bottom) and columns [left, right) of each example's clipped square."""
    top, bottom = _clipped_span(centres[:, 0], size, height)
    left, right = _clipped_span(centres[:, 1], size, width)
    return top, bottom, left, right


def cutout(x: np.ndarray, centres, size: int, fill: float = 0.0) -> np.ndarray:
    """Set a ``size`` × ``size`` square centred at each centre (row, col), int (2,) or (N, 2), to
    ``fill``, clipped at the border (DeVries & Taylor 2017): torchvision's ``erase`` on the clipped box."""
    batch, single = _as_batch("x", x)
    size, fill = check_int("size", size, minimum=1), _check_fill(fill)
    centres = _param("centres", centres, len(batch), single, (2,), kind="int")
    out = batch.copy()
    for image, top, bottom, left, right in zip(out, *_cutout_spans(centres, size, *batch.shape[2:])):
        image[:, top:bottom, left:right] = fill
    return _single_out(out, single)


def one_hot(y, num_classes: int) -> np.ndarray:
    """Integer labels (N,) as float one-hot rows (N, num_classes)."""
    num_classes = check_int("num_classes", num_classes, minimum=1)
    y = np.asarray(y)
    _check_labels(y, num_classes)
    return np.eye(num_classes)[y]


def _check_labels(y, num_classes: int) -> None:
    if y.ndim != 1:
        raise ValueError(f"y: expected integer labels of shape (N,), got shape {tuple(y.shape)}")
    _check_kind("y", y.dtype, "int")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"y: expected labels in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")


def _check_mixing(x, y, perm, torch_batch: bool) -> None:
    """x a batch (N, C, H, W), y soft targets (N, K), perm a permutation of range(N)."""
    x = _check_images("x", x, torch_batch)
    if not torch_batch and x.ndim != 4:
        raise ValueError(f"x: expected a batch (N, C, H, W) to mix, got shape {tuple(x.shape)}")
    check_array("y_onehot", y, ndim=2)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y_onehot: expected {x.shape[0]} rows, one per image, got {y.shape[0]}")
    perm_values = perm.detach().cpu().numpy() if isinstance(perm, torch.Tensor) else np.asarray(perm)
    if perm_values.shape != (x.shape[0],) or not np.array_equal(np.sort(perm_values), np.arange(x.shape[0])):
        raise ValueError(f"perm: expected a permutation of range({x.shape[0]}), got {perm_values!r}")


def _check_lam(lam) -> float:
    return check_probability("lam", float(lam) if isinstance(lam, np.floating) else lam)


def mixup(x: np.ndarray, y_onehot: np.ndarray, lam: float, perm) -> tuple:
    """Equation (4): (λx + (1 − λ)x[π], λy + (1 − λ)y[π]) for a batch x (N, C, H, W), targets (N, K)."""
    _check_mixing(x, y_onehot, perm, torch_batch=False)
    lam = _check_lam(lam)
    return lam * x + (1 - lam) * x[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


def _cutmix_box(box, shape) -> tuple:
    """The box (top, left, height, width) as ints, checked to lie inside the image (it may be empty)."""
    box = box.detach().cpu().numpy() if isinstance(box, torch.Tensor) else np.asarray(box)
    if box.shape != (4,):
        raise ValueError(f"box: expected shape (4,) = (top, left, height, width), got {box.shape}")
    _check_kind("box", box.dtype, "int")
    top, left, h, w = (int(v) for v in box)
    if min(top, left, h, w) < 0 or top + h > shape[-2] or left + w > shape[-1]:
        raise ValueError(f"box: expected a box inside the {tuple(shape[-2:])} image, got {tuple(box)}")
    return top, left, h, w


def cutmix(x: np.ndarray, y_onehot: np.ndarray, box, perm) -> tuple:
    """Equation (5): paste x[π]'s ``box`` (top, left, height, width) into x; the targets mix with
    λ = 1 − box area / (H·W), the share of pixels each image kept."""
    _check_mixing(x, y_onehot, perm, torch_batch=False)
    top, left, h, w = _cutmix_box(box, x.shape)
    mixed = x.copy()
    mixed[:, :, top:top + h, left:left + w] = x[perm][:, :, top:top + h, left:left + w]
    lam = 1 - h * w / (x.shape[2] * x.shape[3])
    return mixed, lam * y_onehot + (1 - lam) * y_onehot[perm]


# ---------------------------------------------------------------------------------------
# Torch path: the same equations on (N, C, H, W) tensors, per-example parameters, no loop over examples
# ---------------------------------------------------------------------------------------

def hflip_torch(x: torch.Tensor, flip=None) -> torch.Tensor:
    """``hflip`` on a batch: flip None mirrors every image, else bool (N,) picks which."""
    x = _check_images("x", x, torch_batch=True)
    mirrored = x.flip(-1)
    if flip is None:
        return mirrored
    flip = _param_torch("flip", flip, x, kind="bool")
    return torch.where(flip[:, None, None, None], mirrored, x)


def pad_crop_torch(x: torch.Tensor, offsets, crop_hw, padding: int = 0, fill: float = 0.0) -> torch.Tensor:
    """``pad_crop`` on a batch, one offset per example, by indexing: row top + i, column left + j."""
    x = _check_images("x", x, torch_batch=True)
    crop_h, crop_w = _check_crop_args(x.shape, crop_hw, padding)
    offsets = _check_offsets(_param_torch("offsets", offsets, x, (2,), kind="int"), x.shape, crop_h, crop_w, padding)
    padded = F.pad(x, (padding,) * 4, value=_check_fill(fill))
    rows = offsets[:, 0, None] + torch.arange(crop_h, device=x.device)          # (N, h)
    cols = offsets[:, 1, None] + torch.arange(crop_w, device=x.device)          # (N, w)
    examples = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return padded[examples, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # indexing puts C last


def resize_bilinear_torch(x: torch.Tensor, size_hw) -> torch.Tensor:
    """``resize_bilinear`` on a batch: ``F.interpolate(bilinear, align_corners=False, antialias=False)``."""
    x = _check_images("x", x, torch_batch=True)
    return F.interpolate(x, size=_check_hw("size_hw", size_hw), mode="bilinear", align_corners=False, antialias=False)


def _two_tap_resize_torch(x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, out_size: int,
                          dim: int) -> torch.Tensor:
    """Equations (1)-(2) along ``dim`` (2: rows, 3: columns) for each example's own span
    [start, start + length) of x (N, C, H, W): gather the two taps, then blend them.
    Only the two taps of each output pixel are read, so the work grows with the output."""
    scale = lengths.to(x.dtype)[:, None] / out_size
    src = (scale * (torch.arange(out_size, device=x.device, dtype=x.dtype) + 0.5) - 0.5).clamp(min=0)   # (1)
    i0 = src.floor()
    lam = src - i0                                                                                # (N, out)
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, lengths[:, None] - 1)                     # the span's last pixel repeats
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = out_size                                                # index and weight broadcast along dim
    out_shape = list(x.shape)
    out_shape[dim] = out_size

    def taps(index: torch.Tensor) -> torch.Tensor:
        return x.gather(dim, (starts[:, None] + index).view(shape).expand(out_shape))

    lam = lam.view(shape)
    return (1 - lam) * taps(i0) + lam * taps(i1)                                                      # (2)


def resized_crop_torch(x: torch.Tensor, boxes, size_hw) -> torch.Tensor:
    """``resized_crop`` on a batch with one box per example: equations (1)-(2) down the rows of each
    box, then across its columns, by gathering each output pixel's two taps (no loop over examples)."""
    x = _check_images("x", x, torch_batch=True)
    out_h, out_w = _check_hw("size_hw", size_hw)
    top, left, h, w = _check_boxes(_param_torch("boxes", boxes, x, (4,), kind="int"), x.shape).unbind(1)
    rows = _two_tap_resize_torch(x, top, h, out_h, dim=2)                          # (N, C, h', W)
    return _two_tap_resize_torch(rows, left, w, out_w, dim=3)                      # (N, C, h', w')


def rotate_torch(x: torch.Tensor, angles, fill: float | None = 0.0) -> torch.Tensor:
    """``rotate`` on a batch, one angle per example: equation (3) as ``affine_grid`` matrices in
    normalized coordinates ([−1, 1] spans W along x and H along y, hence the H/W factors), and
    ``grid_sample`` on the images with a channel of ones appended (its sample is m)."""
    x = _check_images("x", x, torch_batch=True)
    theta = torch.deg2rad(_param_torch("angles", angles, x))
    height, width = x.shape[2:]
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(theta)
    matrices = torch.stack([torch.stack([cos, -sin * height / width, zero], 1),
                            torch.stack([sin * width / height, cos, zero], 1)], 1)   # (N, 2, 3)
    grid = F.affine_grid(matrices, list(x.shape), align_corners=False)
    with_ones = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    sampled = F.grid_sample(with_ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    samples, inside_weight = sampled[:, :-1], sampled[:, -1:]
    if fill is None:
        return samples
    fill = _check_fill(fill)
    return inside_weight * (samples - fill) + fill


def ten_crop_torch(x: torch.Tensor, size_hw) -> torch.Tensor:
    """``ten_crop`` on a batch: (10, N, C, h, w)."""
    x = _check_images("x", x, torch_batch=True)
    return torch.stack(_five_crops(x, size_hw) + _five_crops(x.flip(-1), size_hw))


def _check_colour_batch(x: torch.Tensor) -> torch.Tensor:
    x = _check_images("x", x, torch_batch=True)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x: expected 1 (grey) or 3 (RGB) channels, got {x.shape[1]}")
    return x


def _factors_torch(name: str, value, x: torch.Tensor) -> torch.Tensor:
    factors = _param_torch(name, value, x)
    if (factors < 0).any():
        raise ValueError(f"{name}: expected factors >= 0, got {factors.min().item()}")
    return factors[:, None, None, None]


def rgb_to_grayscale_torch(x: torch.Tensor) -> torch.Tensor:
    """``rgb_to_grayscale`` on a batch: (N, 3, H, W) → (N, 1, H, W)."""
    return _grey(_check_colour_batch(x)).clone()


def adjust_brightness_torch(x: torch.Tensor, factor) -> torch.Tensor:
    """``adjust_brightness`` on a batch, one factor per example."""
    x = _check_colour_batch(x)
    return _blend(x, 0.0, _factors_torch("factor", factor, x))


def adjust_contrast_torch(x: torch.Tensor, factor) -> torch.Tensor:
    """``adjust_contrast`` on a batch, one factor per example."""
    x = _check_colour_batch(x)
    return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), _factors_torch("factor", factor, x))


def adjust_saturation_torch(x: torch.Tensor, factor) -> torch.Tensor:
    """``adjust_saturation`` on a batch, one factor per example."""
    x = _check_colour_batch(x)
    factor = _factors_torch("factor", factor, x)
    return x.clone() if x.shape[1] == 1 else _blend(x, _grey(x), factor)


def _rgb_to_hsv_torch(x: torch.Tensor) -> tuple:
    """``_rgb_to_hsv`` for tensors: hue, saturation, value, each (N, H, W)."""
    r, g, b = x.unbind(1)
    value, minimum = x.amax(dim=1), x.amin(dim=1)
    chroma = value - minimum
    grey = chroma == 0
    safe_chroma = torch.where(grey, torch.ones_like(chroma), chroma)
    safe_value = torch.where(value == 0, torch.ones_like(value), value)
    saturation = torch.where(grey, torch.zeros_like(chroma), chroma / safe_value)
    hue = torch.where(value == r, (g - b) / safe_chroma,
                      torch.where(value == g, 2 + (b - r) / safe_chroma, 4 + (r - g) / safe_chroma))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    return torch.remainder(hue / 6, 1.0), saturation, value


def _hsv_to_rgb_torch(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``_hsv_to_rgb`` for tensors: (N, 3, H, W)."""
    sector = torch.floor(hue * 6)
    f = hue * 6 - sector
    p = (value * (1 - saturation)).clamp(0, 1)
    q = (value * (1 - saturation * f)).clamp(0, 1)
    t = (value * (1 - saturation * (1 - f))).clamp(0, 1)
    candidates = torch.stack([value, p, q, t], dim=1)
    sectors = torch.as_tensor(HSV_SECTORS, device=hue.device)
    choice = sectors[sector.long() % 6].permute(0, 3, 1, 2)
    return candidates.gather(1, choice)


def adjust_hue_torch(x: torch.Tensor, shift) -> torch.Tensor:
    """``adjust_hue`` on a batch, one shift per example. (torchvision computes the hue in float32
    whatever the input's dtype; this keeps x's dtype.)"""
    x = _check_colour_batch(x)
    shift = _check_hue_shift(_param_torch("shift", shift, x))
    if x.shape[1] == 1:
        return x.clone()
    hue, saturation, value = _rgb_to_hsv_torch(x)
    return _hsv_to_rgb_torch(torch.remainder(hue + shift[:, None, None], 1.0), saturation, value)


def color_jitter_torch(x: torch.Tensor, factors) -> torch.Tensor:
    """``color_jitter`` on a batch: factors (N, 4), applied in the order brightness, contrast, saturation, hue."""
    x = _check_colour_batch(x)
    factors = _param_torch("factors", factors, x, (4,))
    steps = (adjust_brightness_torch, adjust_contrast_torch, adjust_saturation_torch, adjust_hue_torch)
    for column, (step, identity) in enumerate(zip(steps, IDENTITY_JITTER)):
        if (factors[:, column] != identity).any():
            x = step(x, factors[:, column])
    return x


def cutout_torch(x: torch.Tensor, centres, size: int, fill: float = 0.0) -> torch.Tensor:
    """``cutout`` on a batch: the squares as a mask from comparisons of row and column indices."""
    x = _check_images("x", x, torch_batch=True)
    size, fill = check_int("size", size, minimum=1), _check_fill(fill)
    centres = _param_torch("centres", centres, x, (2,), kind="int")
    top, bottom, left, right = _cutout_spans(centres, size, *x.shape[2:])
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])                 # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])                 # (N, W)
    square = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]               # (N, 1, H, W)
    return x.masked_fill(square, fill)


def mixup_torch(x: torch.Tensor, y_onehot: torch.Tensor, lam: float, perm) -> tuple:
    """``mixup`` on a batch (equation (4))."""
    _check_mixing(x, y_onehot, perm, torch_batch=True)
    lam, perm = _check_lam(lam), torch.as_tensor(perm, device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


def cutmix_torch(x: torch.Tensor, y_onehot: torch.Tensor, box, perm) -> tuple:
    """``cutmix`` on a batch (equation (5))."""
    _check_mixing(x, y_onehot, perm, torch_batch=True)
    top, left, h, w = _cutmix_box(box, x.shape)
    perm = torch.as_tensor(perm, device=x.device)
    mixed = x.clone()
    mixed[:, :, top:top + h, left:left + w] = x[perm, :, top:top + h, left:left + w]
    lam = 1 - h * w / (x.shape[2] * x.shape[3])
    return mixed, lam * y_onehot + (1 - lam) * y_onehot[perm]


# ---------------------------------------------------------------------------------------
# A training pipeline: steps that draw for a batch, then apply with NumPy or torch
# ---------------------------------------------------------------------------------------

class _Step:
    """One random transform of the images. ``draw(n, image_hw, rng)`` returns its parameters, one
    row per example; ``apply_numpy`` (one image or a batch) and ``apply_torch`` (a batch) apply them;
    calling the step draws and applies with torch, passing the labels through, which is the
    ``augment(x, y, rng) -> (x, target)`` hook of ``lib.train.train``."""

    mixes_labels = False

    def output_hw(self, image_hw) -> tuple:
        """The (height, width) of the images this step returns."""
        return _check_hw("image_hw", image_hw)

    def __call__(self, x: torch.Tensor, y, rng: np.random.Generator) -> tuple:
        x = _check_images("x", x, torch_batch=True)
        return self.apply_torch(x, self.draw(x.shape[0], tuple(x.shape[2:]), rng)), y

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class RandomFlip(_Step):
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = check_probability("p", p)

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        return draw_flips(n, self.p, rng=rng)

    def apply_numpy(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        return hflip(x, params)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        return hflip_torch(x, params)


class RandomPadCrop(_Step):
    """Pad by ``padding`` pixels of ``fill`` and crop back to the input size at a random position:
    the "pad 4 and crop" random shift of ResNet's CIFAR-10 training (He et al. 2016)."""

    def __init__(self, padding: int, fill: float = 0.0):
        self.padding, self.fill = check_int("padding", padding, minimum=0), _check_fill(fill)

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        return draw_crop_offsets(n, image_hw, image_hw, self.padding, rng=rng)

    def apply_numpy(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        return pad_crop(x, params, tuple(x.shape[-2:]), self.padding, self.fill)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        return pad_crop_torch(x, params, tuple(x.shape[-2:]), self.padding, self.fill)


class RandomResizedCrop(_Step):
    """Crop a random box (area share in ``scale``, aspect ratio in ``ratio``) and resize it to ``size_hw``."""

    def __init__(self, size_hw, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size_hw = _check_hw("size_hw", size_hw)
        self.scale, self.ratio = _check_range("scale", scale, 0.0, 1.0), _check_range("ratio", ratio, 0.0, math.inf)

    def output_hw(self, image_hw) -> tuple:
        return self.size_hw

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        return draw_resized_crop_boxes(n, image_hw, self.scale, self.ratio, rng=rng)

    def apply_numpy(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        return resized_crop(x, params, self.size_hw)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        return resized_crop_torch(x, params, self.size_hw)


class RandomRotation(_Step):
    """Rotate by an angle uniform in [−degrees, degrees] (or a pair (low, high)), bilinear, same size."""

    def __init__(self, degrees, fill: float | None = 0.0):
        _angle_range(degrees)
        self.degrees, self.fill = degrees, None if fill is None else _check_fill(fill)

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        return draw_angles(n, self.degrees, rng=rng)

    def apply_numpy(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        return rotate(x, params, self.fill)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        return rotate_torch(x, params, self.fill)


class ColorJitter(_Step):
    """Random brightness, contrast, saturation and hue, applied in that fixed order (see ``draw_color_jitter``)."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.draw(1, 1, np.random.default_rng(0))          # checks the strengths now, not at the first batch

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        return draw_color_jitter(n, self.brightness, self.contrast, self.saturation, self.hue, rng=rng)

    def apply_numpy(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        return color_jitter(x, params)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        return color_jitter_torch(x, params)


class Cutout(_Step):
    """Cut a ``size`` × ``size`` square of ``fill`` at a uniform centre, clipped at the border, from
    each image with probability ``p``. Parameters: int (n, 3), columns row, col, applied (0 or 1)."""

    def __init__(self, size: int, p: float = 1.0, fill: float = 0.0):
        self.size, self.p, self.fill = check_int("size", size, minimum=1), check_probability("p", p), _check_fill(fill)

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> np.ndarray:
        centres = draw_cutout_centres(n, image_hw, rng=rng)
        return np.column_stack([centres, rng.random(n) < self.p])

    def apply_numpy(self, x: np.ndarray, params) -> np.ndarray:
        params = np.asarray(params)
        applied = params[..., 2].astype(bool)
        cut = cutout(x, params[..., :2], self.size, self.fill)
        return np.where(applied.reshape(applied.shape + (1, 1, 1)), cut, x)

    def apply_torch(self, x: torch.Tensor, params) -> torch.Tensor:
        params = torch.as_tensor(params, device=x.device)
        applied = params[:, 2].bool()[:, None, None, None]
        return torch.where(applied, cutout_torch(x, params[:, :2], self.size, self.fill), x)


class _MixingStep(_Step):
    """A step that mixes examples and their labels: integer labels (N,) become one-hot first,
    probabilities (N, num_classes) are mixed as they are. ``apply_*`` take and return (x, y)."""

    mixes_labels = True

    def __init__(self, alpha: float, num_classes: int):
        self.alpha, self.num_classes = check_positive("alpha", alpha), check_int("num_classes", num_classes, minimum=2)

    def __call__(self, x: torch.Tensor, y, rng: np.random.Generator) -> tuple:
        x = _check_images("x", x, torch_batch=True)
        return self.apply_torch(x, y, self.draw(x.shape[0], tuple(x.shape[2:]), rng))

    def _targets_numpy(self, y) -> np.ndarray:
        y = np.asarray(y)
        return one_hot(y, self.num_classes) if y.ndim == 1 else self._checked_soft(y)

    def _targets_torch(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if y.ndim == 1:
            _check_labels(y, self.num_classes)
            return F.one_hot(y.long(), self.num_classes).to(x.dtype)
        return self._checked_soft(y)

    def _checked_soft(self, y):
        check_array("y", y, ndim=2)
        if y.shape[1] != self.num_classes:
            raise ValueError(f"y: expected labels (N,) or probabilities (N, {self.num_classes}), "
                             f"got shape {tuple(y.shape)}")
        return y


class Mixup(_MixingStep):
    """mixup (equation (4)) with λ ~ Beta(α, α) per batch."""

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> tuple:
        return draw_mixup(n, self.alpha, rng=rng)

    def apply_numpy(self, x: np.ndarray, y, params: tuple) -> tuple:
        return mixup(x, self._targets_numpy(y), *params)

    def apply_torch(self, x: torch.Tensor, y: torch.Tensor, params: tuple) -> tuple:
        return mixup_torch(x, self._targets_torch(y, x), *params)


class CutMix(_MixingStep):
    """CutMix (equation (5)) with λ ~ Beta(α, α) per batch setting the box's side."""

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> tuple:
        return draw_cutmix(n, image_hw, self.alpha, rng=rng)

    def apply_numpy(self, x: np.ndarray, y, params: tuple) -> tuple:
        return cutmix(x, self._targets_numpy(y), *params)

    def apply_torch(self, x: torch.Tensor, y: torch.Tensor, params: tuple) -> tuple:
        return cutmix_torch(x, self._targets_torch(y, x), *params)


class Compose:
    """Steps applied in order. Calling it, ``pipeline(x, y, rng) -> (x, target)``, draws every
    step's parameters for the batch and applies them with torch: one call per step per batch, on
    x's device. ``draw`` + ``apply_numpy`` is the same with NumPy (the same draws for the same rng
    state), and ``apply_numpy_per_example`` applies the steps one image at a time, as a
    DataLoader's per-sample transforms run on the CPU."""

    def __init__(self, *steps):
        for k, step in enumerate(steps):
            if not all(hasattr(step, name) for name in ("draw", "apply_numpy", "apply_torch", "output_hw")):
                raise TypeError(f"steps[{k}]: expected an augmentation step (RandomFlip, ...), "
                                f"got {type(step).__name__}")
        self.steps = steps

    def draw(self, n: int, image_hw, rng: np.random.Generator) -> list:
        """Each step's parameters, in order; a step draws for the image size the steps before it return."""
        params = []
        for step in self.steps:
            params.append(step.draw(n, image_hw, rng))
            image_hw = step.output_hw(image_hw)
        return params

    def apply_numpy(self, x: np.ndarray, y, params: list) -> tuple:
        """(x, y) after every step, NumPy, with parameters from ``draw``."""
        for step, step_params in zip(self.steps, params, strict=True):
            x, y = step.apply_numpy(x, y, step_params) if step.mixes_labels else (step.apply_numpy(x, step_params), y)
        return x, y

    def apply_torch(self, x: torch.Tensor, y, params: list) -> tuple:
        """(x, y) after every step, torch, with parameters from ``draw``."""
        for step, step_params in zip(self.steps, params, strict=True):
            x, y = step.apply_torch(x, y, step_params) if step.mixes_labels else (step.apply_torch(x, step_params), y)
        return x, y

    def __call__(self, x: torch.Tensor, y, rng: np.random.Generator) -> tuple:
        x = _check_images("x", x, torch_batch=True)
        return self.apply_torch(x, y, self.draw(x.shape[0], tuple(x.shape[2:]), rng))

    def apply_numpy_per_example(self, x: np.ndarray, y, rng: np.random.Generator) -> tuple:
        """The pipeline one image at a time (NumPy), with the draws ``draw`` makes for the batch, so
        the result equals the batch path's. A mixing step needs the whole batch: the per-example
        steps before it run image by image, then it mixes the batch."""
        x, _ = _as_batch("x", x)
        params = self.draw(x.shape[0], tuple(x.shape[2:]), rng)
        pending = []                                    # per-example steps waiting to run, with their draws
        for step, step_params in zip(self.steps, params):
            if step.mixes_labels:
                x, pending = _run_per_example(x, pending), []
                x, y = step.apply_numpy(x, y, step_params)
            else:
                pending.append((step, step_params))
        return _run_per_example(x, pending), y

    def output_hw(self, image_hw) -> tuple:
        for step in self.steps:
            image_hw = step.output_hw(image_hw)
        return image_hw

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(step) for step in self.steps)})"


def _run_per_example(x: np.ndarray, steps_and_params: list) -> np.ndarray:
    """Each image (C, H, W) through the steps in turn, with its own row of each step's parameters."""
    if not steps_and_params:
        return x
    images = []
    for k, image in enumerate(x):
        for step, params in steps_and_params:
            image = step.apply_numpy(image, params[k])
        images.append(image)
    return np.stack(images)


# ---------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------

def _mean_softmax(model: nn.Module, batches) -> torch.Tensor:
    """The mean of softmax(model(b)) over the batches, in eval mode without gradients (the
    model's mode is restored afterwards)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probabilities = [F.softmax(model(batch), dim=1) for batch in batches]
    finally:
        model.train(was_training)
    return torch.stack(probabilities).mean(dim=0)


def tta_predict(model: nn.Module, x: torch.Tensor, views) -> torch.Tensor:
    """Test-time augmentation: the mean over ``views`` (functions tensor → tensor, e.g. the identity
    and ``hflip_torch``) of the model's softmax probabilities on view(x). Returns (N, num_classes)."""
    x = _check_images("x", x, torch_batch=True)
    views = list(views)
    if not views or not all(callable(view) for view in views):
        raise TypeError("views: expected a non-empty list of functions tensor -> tensor")
    return _mean_softmax(model, (view(x) for view in views))


def ten_crop_predict(model: nn.Module, x: torch.Tensor, size_hw, flips: bool = True) -> torch.Tensor:
    """The ten-crop prediction (Krizhevsky et al. 2012): the mean softmax over the four corner crops,
    the centre crop and (``flips=True``) the same five of the mirrored images. Returns (N, num_classes)."""
    crops = ten_crop_torch(x, size_hw)
    return _mean_softmax(model, crops if flips else crops[:5])


# ---------------------------------------------------------------------------------------
# The chapter's experiment: one recipe, trained with and without each augmentation
# ---------------------------------------------------------------------------------------

# Sized so that 16 networks (4 augmentations x 4 seeds) train in about 20 s on one CPU core:
# small_cnn of width 8 on 300 digits for 500 steps of 32 (53 epochs); by then the validation
# accuracy has levelled off (from step 400, with and without shifts or mixup), though the training
# loss of shifted images still falls slowly. Width 16 reached the same accuracies, within their
# spreads, at twice the cost.
DIGITS_RECIPE = {"width": 8, "steps": 500, "batch_size": 32, "lr": 3e-3}


def train_digits_cnn(data: Splits, augment, seeds, progress: bool = True, description: str = "training",
                     **recipe) -> tuple[list, np.ndarray]:
    """Train ``lib.models.small_cnn`` on ``data`` with ``augment`` (``None``, a step or a ``Compose``,
    or a list of one of those per seed) for each seed, all at once (``lib.train.train_seeds``), with
    Adam and ``DIGITS_RECIPE`` (``recipe`` overrides its entries). Returns the trained models and
    their test accuracies (k,)."""
    unknown = set(recipe) - set(DIGITS_RECIPE)
    if unknown:
        raise ValueError(f"recipe: unknown entries {sorted(unknown)}, expected some of {sorted(DIGITS_RECIPE)}")
    recipe = {**DIGITS_RECIPE, **recipe}
    channels, height, width = data.x_train.shape[1:]
    models, _ = train_seeds(
        lambda: small_cnn(channels, int(data.y_train.max()) + 1, recipe["width"], (height, width)),
        data, lambda params: torch.optim.Adam(params, lr=recipe["lr"]), seeds, steps=recipe["steps"],
        batch_size=recipe["batch_size"], eval_every=recipe["steps"], augment=augment, progress=progress,
        description=description)
    return models, np.array([accuracy_on_test(model, data) for model in models])


@dataclass(frozen=True)
class AugmentationRuns:
    """What ``train_augmentations`` trained, by augmentation name: the models, their test
    accuracies (k,) and the seeds they were trained with."""

    models: dict
    test_accuracy: dict
    seeds: dict


def train_augmentations(data: Splits, augmentations: dict, seeds, progress: bool = True,
                        **recipe) -> AugmentationRuns:
    """``train_digits_cnn`` for every augmentation (name → step, ``Compose`` or None), ``len(seeds)``
    networks each, all in ONE batched run: one vmapped step trains them all, which is faster on a
    CPU than one run per augmentation. The k-th augmentation trains on seeds
    ``k · (max(seeds) + 1) + s`` for s in ``seeds``: distinct seeds, so each network has its own
    initialization and batch order, and the first augmentation keeps ``seeds`` themselves."""
    if not isinstance(augmentations, dict) or not augmentations:
        raise TypeError(f"augmentations: expected a non-empty dict name -> augmentation (or None), "
                        f"got {type(augmentations).__name__}")
    seeds = list(seeds)
    stride = max(seeds) + 1
    seeds_of = {name: [k * stride + seed for seed in seeds] for k, name in enumerate(augmentations)}
    all_seeds = [seed for name in augmentations for seed in seeds_of[name]]
    per_seed = [augment for augment in augmentations.values() for _ in seeds]
    models, accuracies = train_digits_cnn(data, per_seed, all_seeds, progress=progress, **recipe)
    position = {name: slice(k * len(seeds), (k + 1) * len(seeds)) for k, name in enumerate(augmentations)}
    return AugmentationRuns({name: models[where] for name, where in position.items()},
                            {name: accuracies[where] for name, where in position.items()}, seeds_of)
