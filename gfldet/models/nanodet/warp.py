"""NanoDet's input geometry without OpenCV: the resize matrix of its val pipeline, ``cv2.warpPerspective``'s bilinear
sampling of uint8 images reproduced bit for bit, and the inverse warp of boxes.

The official val pipeline (``ShapeTransform`` with no augmentation) resizes an image with ``cv2.warpPerspective``
and a pure scale matrix (``keep_ratio`` False: stretch to the input size), or a scale about the centre into the
smallest canvas that holds the scaled image (``keep_ratio`` True). That warp does not sample like ``cv2.resize``
or ``F.interpolate``: OpenCV 4.x (<= 4.10; 4.11 replaced the warp kernels) maps every destination pixel ``(x, y)``
through the inverted matrix in double precision, rounds the source position to 1/32 pixel
(``round_half_even(32 * X)``), and interpolates with integer weights ``w = (32 - a_x or a_x) (32 - a_y or a_y) * 32``
(15 fractional bits, summing to 2^15), ``out = (sum p * w + 2^14) >> 15``; source pixels outside the image read as 0
(``BORDER_CONSTANT``), so the last row and column of an upscaled image blend with black.

Details reproduced, each of which changes some pixels: the matrix is inverted with OpenCV's closed-form 3x3 inverse
(cofactors times ``1 / det``, not LAPACK); rows are processed in blocks of ``bw0`` columns and a pixel's source x is
``(M0 * x_block + M1 * y + M2) + M0 * x_in_block`` (the sum OpenCV forms); the weight table's entry at offset
(0, 0) is (32767, 0, 0, 1) in OpenCV (saturation of 32768 to a short and its correction), which gives the same uint8
result as (32768, 0, 0, 0) for every input and is computed as the latter.

Shapes: images ``(H, W, C)`` (HWC, as OpenCV), matrices 3x3 float64.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...errors import GfldetError
from ...ops.resize import cv_invert3x3 as invert3x3
from ...ops.resize import warp_resize_matrix

__all__ = ["resize_matrix", "cv_invert3x3", "warp_perspective_bilinear", "warp_boxes"]

INTER_BITS = 5
INTER_TAB_SIZE = 1 << INTER_BITS  # 1/32 pixel
REMAP_BITS = 15  # INTER_REMAP_COEF_BITS
BLOCK_SZ = 32  # WarpPerspectiveInvoker's block: 1024 destination pixels
INT_MIN, INT_MAX = -(2 ** 31), 2 ** 31 - 1


def resize_matrix(src_wh: tuple[int, int], dst_wh: tuple[int, int], keep_ratio: bool) -> tuple[Tensor, tuple[int, int]]:
    """The official val pipeline's warp matrix of an image of size ``src_wh = (w, h)`` for the input size
    ``dst_wh`` (float64 tensor), and the size of the warped image: :func:`gfldet.ops.resize.warp_resize_matrix`,
    the rule the torch-free runtime uses too."""
    m, size = warp_resize_matrix(src_wh, dst_wh, keep_ratio)
    return torch.tensor(m, dtype=torch.float64), size


def cv_invert3x3(m: Tensor | Sequence[Sequence[float]]) -> list[float]:
    """``cv::invert`` of a 3x3 double matrix (:func:`gfldet.ops.resize.cv_invert3x3`), row-major, as floats."""
    return invert3x3(m.tolist() if isinstance(m, Tensor) else m)


def _source_positions(minv: Sequence[float], dst_w: int, dst_h: int) -> tuple[Tensor, Tensor]:
    """Source positions in 1/32 pixel (int64), as WarpPerspectiveInvoker computes them: ``(dst_h, dst_w)`` each, or,
    for a matrix without rotation, shear or perspective (NanoDet's scale-and-shift, in val and training),
    ``(1, dst_w)`` and ``(dst_h, 1)``: the same numbers (the zero terms add exact zeros), X then depends on the column
    only and Y on the row only."""
    f64 = torch.float64
    bh0 = min(BLOCK_SZ // 2, dst_h)
    bw0 = min(BLOCK_SZ * BLOCK_SZ // bh0, dst_w)
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = minv
    separable = m1 == 0 and m3 == 0 and m6 == 0 and m7 == 0
    x = torch.arange(dst_w, dtype=torch.int64)
    xb = ((x // bw0) * bw0).to(f64)[None, :]  # block start
    x1 = (x % bw0).to(f64)[None, :]  # offset in the block
    y = torch.arange(dst_h, dtype=f64)[:, None]
    if separable:
        x0 = (m0 * xb + m1 * 0.0) + m2
        y0 = (m3 * 0.0 + m4 * y) + m5
        wx = wy = torch.full((1, 1), float(m8), dtype=f64)
    else:
        x0 = (m0 * xb + m1 * y) + m2  # each product and sum rounded to double, in C's order
        y0 = (m3 * xb + m4 * y) + m5
        wx = wy = ((m6 * xb + m7 * y) + m8) + m6 * x1

    def scale(w: Tensor) -> Tensor:
        return torch.where(w != 0, INTER_TAB_SIZE / torch.where(w != 0, w, torch.ones_like(w)), torch.zeros_like(w))

    fx = ((x0 + m0 * x1) * scale(wx)).clamp(INT_MIN, INT_MAX)
    fy = ((y0 + m3 * (0.0 if separable else x1)) * scale(wy)).clamp(INT_MIN, INT_MAX)
    return torch.round(fx).to(torch.int64), torch.round(fy).to(torch.int64)  # cvRound: half to even


def warp_perspective_bilinear(img: Tensor, m: Tensor, dst_wh: tuple[int, int]) -> Tensor:
    """``cv2.warpPerspective(img, m, dst_wh)`` (bilinear, constant border 0) of an ``(H, W, C)`` image: bit for bit
    for uint8 (OpenCV <= 4.10 on x86-64). Float images use the same 1/32-pixel positions with exact float weights (a
    float image is not what the official pipeline reads; close to OpenCV's float path, not bit for bit). A matrix
    without rotation, shear or perspective gathers rows, then columns; uint8 sums in int32 (at most 255 x 2^15)."""
    if img.dim() != 3:
        raise GfldetError(f"expected an (H, W, C) image, got shape {tuple(img.shape)}")
    dst_w, dst_h = (int(v) for v in dst_wh)
    h, w, c = img.shape
    X, Y = _source_positions(cv_invert3x3(m), dst_w, dst_h)
    sx = (X >> INTER_BITS).clamp(-(2 ** 15), 2 ** 15 - 1)  # saturate_cast<short>
    sy = (Y >> INTER_BITS).clamp(-(2 ** 15), 2 ** 15 - 1)
    ax, ay = X & (INTER_TAB_SIZE - 1), Y & (INTER_TAB_SIZE - 1)
    # zero border: pad one pixel all round; positions further out read the pad too (their 2x2 patch is all border)
    exact = img.dtype == torch.uint8
    src = torch.nn.functional.pad(img.permute(2, 0, 1) if exact else img.permute(2, 0, 1).to(torch.float32),
                                  (1, 1, 1, 1))
    px0, px1 = (sx + 1).clamp(0, w + 1), (sx + 2).clamp(0, w + 1)
    py0, py1 = (sy + 1).clamp(0, h + 1), (sy + 2).clamp(0, h + 1)
    wx1, wy1 = ax, ay
    wx0, wy0 = INTER_TAB_SIZE - ax, INTER_TAB_SIZE - ay
    weights = (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1)
    if X.shape[0] == 1:  # separable: px (1, w'), py (h', 1)
        rows0, rows1 = src.index_select(1, py0[:, 0]), src.index_select(1, py1[:, 0])
        taps = (rows0.index_select(2, px0[0]), rows0.index_select(2, px1[0]), rows1.index_select(2, px0[0]),
                rows1.index_select(2, px1[0]))
    else:
        flat, stride = src.reshape(c, -1), w + 2
        taps = tuple(flat[:, (py * stride + px).reshape(-1)].reshape(c, dst_h, dst_w)
                     for py, px in ((py0, px0), (py0, px1), (py1, px0), (py1, px1)))
    if exact:
        scale = 1 << (REMAP_BITS - 2 * INTER_BITS)  # (k / 32) (m / 32) * 2^15 = k m * 32
        acc = sum(t.to(torch.int32) * (wt * scale).to(torch.int32) for t, wt in zip(taps, weights))
        out = ((acc + (1 << (REMAP_BITS - 1))) >> REMAP_BITS).clamp(0, 255).to(torch.uint8)
    else:
        acc = sum(t * (wt.to(torch.float32) / INTER_TAB_SIZE ** 2) for t, wt in zip(taps, weights))
        out = acc.to(img.dtype)
    return out.permute(1, 2, 0).contiguous()


def warp_boxes(boxes: Tensor, m: Tensor, width: int, height: int) -> Tensor:
    """``(D, 4)`` xyxy boxes through the 3x3 matrix ``m``: the four corners mapped (float64), their bounding box,
    clipped to ``[0, width] x [0, height]``, as float32 (the official ``warp_boxes``)."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).to(torch.float32)
    b = boxes.to(torch.float64)
    x1, y1, x2, y2 = b.unbind(-1)
    corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y2], -1), torch.stack([x1, y2], -1),
                           torch.stack([x2, y1], -1)], dim=1)  # (D, 4, 2)
    xy = torch.cat([corners, torch.ones_like(corners[..., :1])], -1) @ m.to(torch.float64).T
    xy = xy[..., :2] / xy[..., 2:3]
    lo, hi = xy.amin(1), xy.amax(1)
    out = torch.stack([lo[:, 0].clamp(0, width), lo[:, 1].clamp(0, height), hi[:, 0].clamp(0, width),
                       hi[:, 1].clamp(0, height)], dim=-1)
    return out.to(torch.float32)

