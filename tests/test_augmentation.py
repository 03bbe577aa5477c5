"""The augmentation module: every torch function against its NumPy reference with the same drawn
parameters (float64), both against torchvision.transforms.v2.functional applied image by image,
exact cases (flip twice, 90° rotation, identity resize), the draws' distributions, bad inputs, the
pipeline (torch batch = NumPy batch = NumPy one image at a time) and test-time averaging."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import nn

from lib.augmentation import (
    ColorJitter, Compose, CutMix, Cutout, Mixup, RandomFlip, RandomPadCrop, RandomResizedCrop, RandomRotation,
    adjust_brightness, adjust_brightness_torch, adjust_contrast, adjust_contrast_torch, adjust_hue,
    adjust_hue_torch, adjust_saturation, adjust_saturation_torch, color_jitter, color_jitter_torch, cutmix,
    cutmix_torch, cutout, cutout_torch, draw_angles, draw_color_jitter, draw_crop_offsets, draw_cutmix,
    draw_cutout_centres, draw_flips, draw_mixup, draw_resized_crop_boxes, hflip, hflip_torch, mixup, mixup_torch,
    one_hot, pad_crop, pad_crop_torch, resize_bilinear, resize_bilinear_torch, resized_crop, resized_crop_torch,
    rgb_to_grayscale, rgb_to_grayscale_torch, rotate, rotate_torch, ten_crop, ten_crop_predict, ten_crop_torch,
    tta_predict,
)

# (N, C, H, W): odd and even sides, non-square, one image and several, grey and RGB
SHAPES = [(1, 3, 5, 7), (4, 3, 8, 6), (3, 1, 7, 7), (2, 1, 6, 9)]
RGB_SHAPES = [s for s in SHAPES if s[1] == 3]


def images(shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def per_image(function, x, *params):
    """A torchvision function applied image by image (it takes one set of parameters per call)."""
    t = torch.tensor(x)
    return np.stack([function(t[k], *(p[k] for p in params)).numpy() for k in range(len(t))])


def assert_paths_agree(numpy_out, torch_out, torchvision_out=None, atol=1e-12):
    np.testing.assert_allclose(torch_out.numpy() if isinstance(torch_out, torch.Tensor) else torch_out,
                               numpy_out, rtol=0, atol=atol)
    if torchvision_out is not None:
        np.testing.assert_allclose(torchvision_out, numpy_out, rtol=0, atol=atol)


# --------------------------------------------------------------------------------------
# Geometry: NumPy = torch = torchvision
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_hflip_paths_agree(shape):
    x, rng = images(shape), np.random.default_rng(1)
    flips = draw_flips(shape[0], rng=rng)
    expected = per_image(lambda image, f: TF.horizontal_flip(image) if f else image, x, flips)
    assert_paths_agree(hflip(x, flips), hflip_torch(torch.tensor(x), flips), expected)
    assert_paths_agree(hflip(x), hflip_torch(torch.tensor(x)), per_image(TF.horizontal_flip, x))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("padding, fill", [(0, 0.0), (2, 0.0), (3, 0.5)])
def test_pad_crop_paths_agree(shape, padding, fill):
    x, rng = images(shape), np.random.default_rng(2)
    crop_hw = (shape[2] - 1, shape[3])
    offsets = draw_crop_offsets(shape[0], shape[2:], crop_hw, padding, rng=rng)
    expected = per_image(lambda image, o: TF.crop(TF.pad(image, [padding], fill=fill), int(o[0]), int(o[1]), *crop_hw),
                         x, offsets)
    assert_paths_agree(pad_crop(x, offsets, crop_hw, padding, fill),
                       pad_crop_torch(torch.tensor(x), offsets, crop_hw, padding, fill), expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size_hw", [(4, 5), (11, 8)])
def test_resized_crop_paths_agree(shape, size_hw):
    x, rng = images(shape), np.random.default_rng(3)
    boxes = draw_resized_crop_boxes(shape[0], shape[2:], scale=(0.2, 1.0), rng=rng)
    expected = per_image(lambda image, b: TF.resized_crop(image, *map(int, b), list(size_hw), antialias=False),
                         x, boxes)
    assert_paths_agree(resized_crop(x, boxes, size_hw), resized_crop_torch(torch.tensor(x), boxes, size_hw), expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size_hw", [(3, 4), (12, 13), (5, 14)])
def test_resize_equals_interpolate(shape, size_hw):
    x = images(shape)
    expected = F.interpolate(torch.tensor(x), size=size_hw, mode="bilinear", align_corners=False, antialias=False)
    assert_paths_agree(resize_bilinear(x, size_hw), resize_bilinear_torch(torch.tensor(x), size_hw), expected.numpy())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fill", [None, 0.0, 0.7])
def test_rotate_paths_agree(shape, fill):
    x, rng = images(shape), np.random.default_rng(4)
    angles = draw_angles(shape[0], 60, rng=rng)
    expected = per_image(lambda image, a: TF.rotate(image, float(a), interpolation=TF.InterpolationMode.BILINEAR,
                                                    fill=fill), x, angles)
    assert_paths_agree(rotate(x, angles, fill), rotate_torch(torch.tensor(x), angles, fill), expected, atol=1e-10)


def test_rotate_fill_zero_is_not_fill_none_at_the_border():
    """torchvision weights the image by the in-image share m twice near the border when fill is a number."""
    x = np.ones((1, 6, 6))
    with_none, with_zero = rotate(x, 30.0, fill=None), rotate(x, 30.0, fill=0.0)
    np.testing.assert_allclose(with_zero, with_none**2, atol=1e-12)       # for x = 1, s = m
    assert (with_none - with_zero).max() > 0.1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size_hw", [(3, 3), (4, 5)])
def test_ten_crop_paths_agree(shape, size_hw):
    x = images(shape)
    expected = np.stack([per_image(lambda image: TF.ten_crop(image, list(size_hw))[k], x) for k in range(10)])
    assert_paths_agree(ten_crop(x, size_hw), ten_crop_torch(torch.tensor(x), size_hw), expected)
    np.testing.assert_array_equal(ten_crop(x[0], size_hw), expected[:, 0])


def test_flip_twice_is_the_identity():
    x = images((3, 3, 5, 4))
    np.testing.assert_array_equal(hflip(hflip(x)), x)
    flips = np.array([True, False, True])
    np.testing.assert_array_equal(hflip_torch(hflip_torch(torch.tensor(x), flips), flips).numpy(), x)


@pytest.mark.parametrize("side", [5, 6])
def test_rotation_by_90_degrees_is_rot90(side):
    x = images((2, 3, side, side))
    expected = np.rot90(x, k=1, axes=(2, 3))
    np.testing.assert_allclose(rotate(x, 90.0), expected, atol=1e-6)
    np.testing.assert_allclose(rotate_torch(torch.tensor(x), 90.0).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(rotate(x[0], 0.0), x[0], atol=1e-12)


def test_full_crop_resized_to_its_size_is_the_identity():
    x = images((2, 3, 7, 5))
    boxes = np.array([0, 0, 7, 5])
    np.testing.assert_allclose(resized_crop(x, boxes, (7, 5)), x, atol=1e-12)
    np.testing.assert_allclose(resized_crop_torch(torch.tensor(x), boxes, (7, 5)).numpy(), x, atol=1e-12)
    np.testing.assert_allclose(resize_bilinear(x, (7, 5)), x, atol=1e-12)


def test_torch_path_takes_tensor_parameters_and_float32():
    x, rng = images((3, 3, 8, 7)), np.random.default_rng(21)
    x32 = torch.tensor(x, dtype=torch.float32)
    angles = draw_angles(3, 45, rng=rng)
    boxes = draw_resized_crop_boxes(3, (8, 7), rng=rng)
    offsets = draw_crop_offsets(3, (8, 7), (8, 7), 2, rng=rng)
    factors = draw_color_jitter(3, 0.4, 0.4, 0.4, 0.1, rng=rng)
    centres = draw_cutout_centres(3, (8, 7), rng=rng)
    cases = [(rotate, rotate_torch, angles, ()), (resized_crop, resized_crop_torch, boxes, ((5, 6),)),
             (pad_crop, pad_crop_torch, offsets, ((8, 7), 2)), (color_jitter, color_jitter_torch, factors, ()),
             (cutout, cutout_torch, centres, (3,))]
    for reference, torch_path, params, options in cases:
        out = torch_path(x32, torch.tensor(params), *options)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), reference(x, params, *options), atol=1e-5)


def test_single_image_equals_a_batch_of_one():
    x, angle = images((3, 6, 5)), 17.0
    np.testing.assert_array_equal(rotate(x, angle), rotate(x[None], [angle])[0])
    np.testing.assert_array_equal(pad_crop(x, [1, 2], (6, 5), 2), pad_crop(x[None], [[1, 2]], (6, 5), 2)[0])


# --------------------------------------------------------------------------------------
# Colour: NumPy = torch = torchvision
# --------------------------------------------------------------------------------------

COLOUR = [
    (adjust_brightness, adjust_brightness_torch, TF.adjust_brightness, (0.0, 1.8)),
    (adjust_contrast, adjust_contrast_torch, TF.adjust_contrast, (0.0, 1.8)),
    (adjust_saturation, adjust_saturation_torch, TF.adjust_saturation, (0.0, 1.8)),
    (adjust_hue, adjust_hue_torch, TF.adjust_hue, (-0.5, 0.5)),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reference, torch_path, torchvision_function, factor_range", COLOUR)
def test_colour_paths_agree(shape, reference, torch_path, torchvision_function, factor_range):
    x, rng = images(shape), np.random.default_rng(5)
    factors = rng.uniform(*factor_range, shape[0])
    expected = per_image(lambda image, f: torchvision_function(image, float(f)), x, factors)
    atol = 1e-6 if reference is adjust_hue else 1e-12        # torchvision's hue runs in float32
    np.testing.assert_allclose(torch_path(torch.tensor(x), factors).numpy(), reference(x, factors), rtol=0, atol=1e-12)
    np.testing.assert_allclose(expected, reference(x, factors), rtol=0, atol=atol)


@pytest.mark.parametrize("shape", RGB_SHAPES)
def test_grayscale_and_color_jitter_paths_agree(shape):
    x, rng = images(shape), np.random.default_rng(6)
    assert_paths_agree(rgb_to_grayscale(x), rgb_to_grayscale_torch(torch.tensor(x)), per_image(TF.rgb_to_grayscale, x))
    factors = draw_color_jitter(shape[0], 0.4, 0.4, 0.4, 0.1, rng=rng)

    def torchvision_jitter(image, f):
        image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, f[0]), f[1]), f[2])
        return TF.adjust_hue(image, f[3])
    np.testing.assert_allclose(color_jitter_torch(torch.tensor(x), factors).numpy(), color_jitter(x, factors),
                               atol=1e-12)
    np.testing.assert_allclose(per_image(torchvision_jitter, x, factors), color_jitter(x, factors), atol=1e-6)


def test_hue_round_trip_and_full_turn():
    x = images((2, 3, 4, 5))
    np.testing.assert_allclose(adjust_hue(x, 0.0), x, atol=1e-12)
    np.testing.assert_allclose(adjust_hue(adjust_hue(x, 0.3), -0.3), x, atol=1e-12)
    grey = np.repeat(images((1, 1, 4, 4)), 3, axis=1)
    np.testing.assert_allclose(adjust_hue(grey, 0.4), grey, atol=1e-12)           # no colour, nothing to turn


def test_identity_jitter_changes_nothing():
    x = images((2, 3, 4, 4))
    factors = draw_color_jitter(2, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(factors, [[1, 1, 1, 0]] * 2)
    np.testing.assert_array_equal(color_jitter(x, factors), x)


# --------------------------------------------------------------------------------------
# Cutout, mixup, CutMix
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 3, 4])
def test_cutout_equals_erase_on_the_clipped_box(shape, size):
    x, rng = images(shape), np.random.default_rng(7)
    centres = draw_cutout_centres(shape[0], shape[2:], rng=rng)

    def erase_clipped(image, centre):
        top, left = max(centre[0] - size // 2, 0), max(centre[1] - size // 2, 0)
        bottom, right = min(centre[0] - size // 2 + size, shape[2]), min(centre[1] - size // 2 + size, shape[3])
        return TF.erase(image, int(top), int(left), int(bottom - top), int(right - left), torch.tensor(0.25))
    assert_paths_agree(cutout(x, centres, size, 0.25), cutout_torch(torch.tensor(x), centres, size, 0.25),
                       per_image(erase_clipped, x, centres))


def test_cutout_at_the_corner_is_clipped():
    out = cutout(np.ones((1, 6, 6)), [0, 0], 4)
    assert out[0, :2, :2].sum() == 0 and out.sum() == 36 - 4


@pytest.mark.parametrize("n", [1, 5])
def test_mixup_paths_agree_and_targets_sum_to_one(n):
    x, rng = images((n, 3, 4, 4)), np.random.default_rng(8)
    y = one_hot(rng.integers(0, 3, n), 3)
    lam, perm = draw_mixup(n, 0.4, rng=rng)
    x_mixed, y_mixed = mixup(x, y, lam, perm)
    x_torch, y_torch = mixup_torch(torch.tensor(x), torch.tensor(y), lam, perm)
    assert_paths_agree(x_mixed, x_torch)
    assert_paths_agree(y_mixed, y_torch)
    np.testing.assert_allclose(y_mixed.sum(axis=1), 1.0)
    np.testing.assert_allclose(x_mixed, lam * x + (1 - lam) * x[perm])


@pytest.mark.parametrize("shape", [(4, 3, 8, 6), (3, 1, 7, 7)])
def test_cutmix_paths_agree_and_target_weight_is_the_pasted_share(shape):
    x, rng = images(shape), np.random.default_rng(9)
    y = one_hot(np.arange(shape[0]) % 2, 2)
    for _ in range(5):
        box, perm = draw_cutmix(shape[0], shape[2:], 1.0, rng=rng)
        x_mixed, y_mixed = cutmix(x, y, box, perm)
        x_torch, y_torch = cutmix_torch(torch.tensor(x), torch.tensor(y), box, perm)
        assert_paths_agree(x_mixed, x_torch)
        assert_paths_agree(y_mixed, y_torch)
        pasted = np.zeros(shape[2:], bool)
        pasted[box[0]:box[0] + box[2], box[1]:box[1] + box[3]] = True
        lam = 1 - pasted.mean()                                    # the share of pixels each image kept
        np.testing.assert_allclose(y_mixed, lam * y + (1 - lam) * y[perm])
        np.testing.assert_array_equal(x_mixed[:, :, pasted], x[perm][:, :, pasted])
        np.testing.assert_array_equal(x_mixed[:, :, ~pasted], x[:, :, ~pasted])


def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])


# --------------------------------------------------------------------------------------
# Draws
# --------------------------------------------------------------------------------------

def test_resized_crop_boxes_lie_inside_with_area_and_ratio_in_range():
    height, width, scale, ratio = 40, 60, (0.1, 0.6), (0.5, 2.0)
    boxes = draw_resized_crop_boxes(2000, (height, width), scale, ratio, rng=np.random.default_rng(10))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # w and h are rounded: allow their half-pixel rounding in the area and the ratio
    assert ((h + 0.5) * (w + 0.5) >= scale[0] * height * width).all()
    assert ((h - 0.5) * (w - 0.5) <= scale[1] * height * width).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all() and ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    assert top.max() > 0 and left.max() > 0 and len(np.unique(h)) > 10


@pytest.mark.parametrize("image_hw, ratio, expected_hw", [((10, 40), (0.5, 2.0), (10, 20)),   # too wide: cut the width
                                                          ((40, 10), (0.5, 2.0), (20, 10)),   # too tall: cut the height
                                                          ((20, 30), (1.0, 1.0), (20, 20))])
def test_resized_crop_falls_back_to_the_centre_crop(image_hw, ratio, expected_hw):
    # scale 1 asks for the whole area, impossible at any ratio in range but the image's own
    boxes = draw_resized_crop_boxes(3, image_hw, (1.0, 1.0), ratio, rng=np.random.default_rng(11))
    h, w = expected_hw
    np.testing.assert_array_equal(boxes, [[(image_hw[0] - h) // 2, (image_hw[1] - w) // 2, h, w]] * 3)


def test_crop_offsets_cover_every_position():
    offsets = draw_crop_offsets(3000, (8, 8), (8, 8), padding=2, rng=np.random.default_rng(12))
    assert {tuple(o) for o in offsets} == {(i, j) for i in range(5) for j in range(5)}


def test_angles_flips_centres_and_jitter_ranges():
    rng = np.random.default_rng(13)
    angles = draw_angles(5000, 30, rng=rng)
    assert -30 <= angles.min() < -29 and 29 < angles.max() <= 30
    assert ((draw_angles(100, (10, 20), rng=rng) >= 10) & (draw_angles(100, (10, 20), rng=rng) <= 20)).all()
    assert abs(draw_flips(20000, 0.3, rng=rng).mean() - 0.3) < 0.015
    centres = draw_cutout_centres(3000, (5, 7), rng=rng)
    assert centres[:, 0].max() == 4 and centres[:, 1].max() == 6 and centres.min() == 0
    factors = draw_color_jitter(5000, brightness=1.5, contrast=0.2, saturation=0.0, hue=0.1, rng=rng)
    assert factors[:, 0].min() >= 0 and factors[:, 0].max() <= 2.5                  # max(0, 1 − 1.5) = 0
    assert 0.8 <= factors[:, 1].min() and factors[:, 1].max() <= 1.2
    assert (factors[:, 2] == 1).all() and np.abs(factors[:, 3]).max() <= 0.1


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_mean_is_one_half(alpha):
    rng = np.random.default_rng(14)
    lams = np.array([draw_mixup(4, alpha, rng=rng)[0] for _ in range(4000)])
    assert abs(lams.mean() - 0.5) < 4 * lams.std() / np.sqrt(len(lams))
    lam, perm = draw_mixup(6, alpha, rng=rng)
    np.testing.assert_array_equal(np.sort(perm), np.arange(6))


def test_cutmix_box_side_follows_lambda():
    """The box's side is ⌊H·√(1 − λ)⌋ × ⌊W·√(1 − λ)⌋ before clipping, so its area share is about 1 − λ."""
    for seed in range(200):
        lam = np.random.default_rng(seed).beta(1.0, 1.0)              # draw_cutmix's first draw
        (top, left, h, w), _ = draw_cutmix(4, (32, 24), 1.0, rng=np.random.default_rng(seed))
        assert h <= int(32 * np.sqrt(1 - lam)) and w <= int(24 * np.sqrt(1 - lam))
        if 0 < top and top + h < 32 and 0 < left and left + w < 24:   # not clipped: the full side
            assert (h, w) == (int(32 * np.sqrt(1 - lam)), int(24 * np.sqrt(1 - lam)))


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

BAD_CALLS = [
    (lambda: hflip(np.zeros((4, 4))), ValueError, "x"),
    (lambda: hflip_torch(torch.zeros(3, 4, 4)), ValueError, "x"),
    (lambda: hflip(np.zeros((2, 3, 4, 4), dtype=int)), TypeError, "x"),
    (lambda: hflip(np.zeros((2, 3, 4, 4)), np.array([True, False, True])), ValueError, "flip"),
    (lambda: rotate(np.zeros((2, 3, 4, 4)), np.zeros(3)), ValueError, "angles"),
    (lambda: rotate_torch(torch.zeros(2, 3, 4, 4), np.zeros(3)), ValueError, "angles"),
    (lambda: pad_crop(np.zeros((1, 3, 4, 4)), [0, 0], (7, 4), padding=1), ValueError, "crop_hw"),
    (lambda: pad_crop(np.zeros((1, 3, 4, 4)), [3, 0], (4, 4), padding=1), ValueError, "offsets"),
    (lambda: pad_crop(np.zeros((1, 3, 4, 4)), [0.5, 0], (4, 4)), TypeError, "offsets"),
    (lambda: draw_crop_offsets(2, (4, 4), (5, 4), rng=np.random.default_rng()), ValueError, "crop_hw"),
    (lambda: resized_crop(np.zeros((1, 3, 4, 4)), [2, 0, 3, 4], (4, 4)), ValueError, "boxes"),
    (lambda: resized_crop_torch(torch.zeros(2, 3, 4, 4), np.zeros((3, 4), int), (4, 4)), ValueError, "boxes"),
    (lambda: ten_crop(np.zeros((3, 4, 4)), (5, 4)), ValueError, "crop_hw"),
    (lambda: draw_resized_crop_boxes(2, (8, 8), (0.9, 0.1), rng=np.random.default_rng()), ValueError, "scale"),
    (lambda: draw_resized_crop_boxes(2, (8, 8), (0.1, 1.5), rng=np.random.default_rng()), ValueError, "scale"),
    (lambda: draw_resized_crop_boxes(2, (8, 8), (0.0, 1.0), rng=np.random.default_rng()), ValueError, "scale"),
    (lambda: draw_resized_crop_boxes(2, (8, 8), ratio=(2.0, 1.0), rng=np.random.default_rng()), ValueError, "ratio"),
    (lambda: draw_flips(3, 1.5, rng=np.random.default_rng()), ValueError, "p"),
    (lambda: draw_flips(3, rng=0), TypeError, "rng"),
    (lambda: draw_angles(3, -5, rng=np.random.default_rng()), ValueError, "degrees"),
    (lambda: draw_color_jitter(3, hue=0.7, rng=np.random.default_rng()), ValueError, "hue"),
    (lambda: draw_color_jitter(3, brightness=-1, rng=np.random.default_rng()), ValueError, "brightness"),
    (lambda: draw_mixup(3, 0.0, rng=np.random.default_rng()), ValueError, "alpha"),
    (lambda: draw_cutmix(3, (8, 8), -1.0, rng=np.random.default_rng()), ValueError, "alpha"),
    (lambda: adjust_hue(np.zeros((3, 4, 4)), 0.6), ValueError, "shift"),
    (lambda: adjust_hue_torch(torch.zeros(1, 3, 4, 4), [0.6]), ValueError, "shift"),
    (lambda: adjust_brightness(np.zeros((2, 3, 4, 4)), [1.0, -0.5]), ValueError, "factor"),
    (lambda: adjust_contrast(np.zeros((2, 4, 4, 4)), 1.0), ValueError, "x"),
    (lambda: color_jitter(np.zeros((2, 3, 4, 4)), np.ones((3, 4))), ValueError, "factors"),
    (lambda: cutout(np.zeros((2, 3, 4, 4)), np.zeros((3, 2), int), 2), ValueError, "centres"),
    (lambda: cutout(np.zeros((2, 3, 4, 4)), np.zeros((2, 2), int), 0), ValueError, "size"),
    (lambda: mixup(np.zeros((2, 3, 4, 4)), np.zeros((3, 2)), 0.5, [1, 0]), ValueError, "y_onehot"),
    (lambda: mixup(np.zeros((2, 3, 4, 4)), np.zeros((2, 2)), 0.5, [1, 1]), ValueError, "perm"),
    (lambda: mixup(np.zeros((2, 3, 4, 4)), np.zeros((2, 2)), 1.5, [1, 0]), ValueError, "lam"),
    (lambda: cutmix(np.zeros((2, 3, 4, 4)), np.zeros((2, 2)), np.array([2, 0, 3, 1]), [1, 0]), ValueError, "box"),
    (lambda: one_hot(np.array([0, 3]), 3), ValueError, "y"),
    (lambda: RandomResizedCrop((4, 4), scale=(0.5, 0.2)), ValueError, "scale"),
    (lambda: Cutout(4, p=2.0), ValueError, "p"),
    (lambda: ColorJitter(hue=0.6), ValueError, "hue"),
    (lambda: Mixup(0.0, 10), ValueError, "alpha"),
    (lambda: Compose(RandomFlip(), "flip"), TypeError, "steps[1]"),
    (lambda: tta_predict(nn.Identity(), torch.zeros(1, 3, 4, 4), []), TypeError, "views"),
]


@pytest.mark.parametrize("call, error, name", BAD_CALLS)
def test_bad_inputs_name_the_argument(call, error, name):
    with pytest.raises(error, match=rf"^{name.replace('[', '.').replace(']', '.')}:"):
        call()


# --------------------------------------------------------------------------------------
# The pipeline and test-time augmentation
# --------------------------------------------------------------------------------------

def per_example_pipeline():
    return Compose(RandomResizedCrop((6, 5), scale=(0.3, 1.0)), RandomFlip(), RandomPadCrop(2),
                   RandomRotation(20), ColorJitter(0.3, 0.3, 0.3, 0.05), Cutout(3, p=0.5))


@pytest.mark.parametrize("mixing", [None, Mixup(0.4, 3), CutMix(1.0, 3)])
def test_pipeline_torch_batch_equals_numpy_batch(mixing):
    pipeline = Compose(*per_example_pipeline().steps, *([mixing] if mixing else []))
    x, y = images((5, 3, 8, 7)), np.array([0, 2, 1, 1, 0])
    x_torch, y_torch = pipeline(torch.tensor(x), torch.tensor(y), np.random.default_rng(16))
    x_numpy, y_numpy = pipeline.apply_numpy(x, y, pipeline.draw(5, (8, 7), np.random.default_rng(16)))
    assert x_torch.shape == (5, 3, 6, 5)
    np.testing.assert_allclose(x_torch.numpy(), x_numpy, atol=1e-10)
    np.testing.assert_allclose(np.asarray(y_torch), y_numpy, atol=1e-12)
    if mixing is None:
        np.testing.assert_array_equal(y_torch.numpy(), y)                # labels pass through unchanged
    else:
        np.testing.assert_allclose(y_numpy.sum(axis=1), 1.0)


def test_pipeline_per_example_equals_the_batch():
    pipeline = Compose(*per_example_pipeline().steps, Mixup(0.4, 3))
    x, y = images((4, 3, 8, 7)), np.array([0, 2, 1, 1])
    x_batch, y_batch = pipeline.apply_numpy(x, y, pipeline.draw(4, (8, 7), np.random.default_rng(17)))
    x_each, y_each = pipeline.apply_numpy_per_example(x, y, np.random.default_rng(17))
    np.testing.assert_allclose(x_each, x_batch, atol=1e-12)
    np.testing.assert_allclose(y_each, y_batch, atol=1e-12)


def test_mixing_steps_mix_soft_targets_as_given():
    x, rng = torch.tensor(images((4, 1, 5, 5))), np.random.default_rng(18)
    soft = torch.tensor(np.random.default_rng(0).dirichlet(np.ones(3), 4))
    for step in (Mixup(1.0, 3), CutMix(1.0, 3)):
        _, y = step(x, soft, rng)
        np.testing.assert_allclose(y.sum(dim=1).numpy(), 1.0)


def test_cutout_step_applies_with_probability_p():
    step = Cutout(2, p=0.0)
    x = torch.tensor(images((3, 3, 5, 5)))
    out, _ = step(x, None, np.random.default_rng(19))
    np.testing.assert_array_equal(out.numpy(), x.numpy())
    params = Cutout(2, p=0.5).draw(4000, (5, 5), np.random.default_rng(20))
    assert abs(params[:, 2].mean() - 0.5) < 0.03


def small_model(num_classes=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes)).double()


def test_ten_crop_predict_equals_the_mean_over_torchvision_views():
    model, x = small_model(), torch.tensor(images((3, 3, 6, 7)))
    views = TF.ten_crop(x, [4, 4])
    expected = torch.stack([F.softmax(model(v), dim=1) for v in views]).mean(0)
    torch.testing.assert_close(ten_crop_predict(model, x, (4, 4)), expected, rtol=0, atol=1e-12)
    five = torch.stack([F.softmax(model(v), dim=1) for v in views[:5]]).mean(0)
    torch.testing.assert_close(ten_crop_predict(model, x, (4, 4), flips=False), five, rtol=0, atol=1e-12)


def test_tta_with_the_identity_is_softmax_and_restores_the_mode():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 4 * 4, 4)).double()
    x = torch.tensor(images((3, 3, 4, 4)))
    model.train()
    probabilities = tta_predict(model, x, [lambda t: t])
    assert model.training and not probabilities.requires_grad
    model.eval()
    torch.testing.assert_close(probabilities, F.softmax(model(x), dim=1))
    both = tta_predict(model, x, [lambda t: t, hflip_torch])
    torch.testing.assert_close(both, (F.softmax(model(x), 1) + F.softmax(model(x.flip(-1)), 1)) / 2)


def test_train_digits_cnn_trains_each_seed_with_the_recipe_and_returns_test_accuracies():
    from lib.augmentation import train_digits_cnn
    from lib.data import digits_splits

    data = digits_splits(train_size=64, val_size=32)
    models, accuracies = train_digits_cnn(data, RandomFlip(), [0, 1], progress=False, steps=3, width=2)
    assert len(models) == 2 and accuracies.shape == (2,) and ((0 <= accuracies) & (accuracies <= 1)).all()
    assert models[0][0].out_channels == 2
    with pytest.raises(ValueError, match=r"recipe: unknown entries \['epochs'\]"):
        train_digits_cnn(data, None, [0], epochs=3)


def test_train_augmentations_trains_each_augmentation_on_its_own_seeds_in_one_run():
    from lib.augmentation import train_augmentations, train_digits_cnn
    from lib.data import digits_splits

    data = digits_splits(train_size=64, val_size=32)
    recipe = dict(steps=4, width=2)
    runs = train_augmentations(data, {"none": None, "flips": RandomFlip(), "mixup": Mixup(0.4, 10)}, [0, 2],
                               progress=False, **recipe)
    assert runs.seeds == {"none": [0, 2], "flips": [3, 5], "mixup": [6, 8]}
    for name, augment in [("none", None), ("flips", RandomFlip()), ("mixup", Mixup(0.4, 10))]:
        # the same networks as a separate run of that augmentation alone on those seeds
        _, alone = train_digits_cnn(data, augment, runs.seeds[name], progress=False, **recipe)
        np.testing.assert_allclose(runs.test_accuracy[name], alone, atol=1e-12)
        assert len(runs.models[name]) == 2
    with pytest.raises(TypeError, match=r"augmentations: expected a non-empty dict"):
        train_augmentations(data, [None], [0])
