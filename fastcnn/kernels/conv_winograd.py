"""Numba kernels of 3x3, stride-1 convolution by Winograd's F(2x2, 3x3) algorithm.

Each 2x2 block of outputs of one channel (a *tile*) depends on a 4x4 block ``d``
of the zero-padded input. With the filter ``g`` transformed once into ``U = G g
G^T`` (4x4), the tile is ``A^T ((B^T d B) * U) A``, where ``*`` multiplies
element by element and::

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

Summed over input channels, the 16 element-wise products become 16 independent
matrix products ``M[t] = U[t] @ V[t]`` (``C_out x C_in`` times ``C_in x tiles``),
for 16 multiplications per tile and channel pair where the direct sum needs 36.
The transforms only add and halve, so the result differs from the direct sum
by rounding alone; but the rounding error of an output is bounded by the
magnitudes of all the filter taps and inputs of its tile, not by the output's
own (an output that a large tap meets only through the zero padding still
carries that tap's rounding error).

Layout. Tile ``(ty, tx)`` of a sample is column ``ty * (tw + 1) + tx`` of
``V[t]``: every tile row carries one spare column, so that the input transform
of a whole channel is four long loops over unit-stride arrays. The zero-padded
input plane is stored as its four parity planes (even or odd row, even or odd
column), each ``(th + 1) x (tw + 1)``; corner ``(2 ty + r, 2 tx + c)`` of a tile
is then element ``p + (r // 2) * (tw + 1) + c // 2`` of the plane of parity
``(r % 2, c % 2)``, with ``p`` the tile's column. The output transform likewise
writes four phase planes (even or odd output row and column) with unit stride,
and the last step interleaves them into the NCHW output.

The padding may be up to 2 on every side (the backward pass convolves the output
gradient with padding ``2 - pad``). Every kernel takes arrays and ints only and
validates nothing.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel, serial_kernel
from fastcnn.kernels._small import serial_below

#: Tile columns a group of samples should fill at least: the matrix products run
#: over the columns of a group, and loops much shorter than this lose speed.
TILE_COLUMNS = 256


@serial_kernel
def winograd_filters(weight, u):
    """Transform 3x3 filters: ``u[4 * i + j, co, ci] = (G weight[co, ci] G^T)[i, j]``.

    Parameters
    ----------
    weight : ndarray, shape (C_out, C_in, 3, 3)
        Filters.
    u : ndarray, shape (16, C_out, C_in)
        Output, overwritten.
    """
    half = u.dtype.type(0.5)
    for co in range(weight.shape[0]):
        for ci in range(weight.shape[1]):
            g = weight[co, ci]
            for i in range(4):
                if i == 0:
                    r0, r1, r2 = g[0, 0], g[0, 1], g[0, 2]
                elif i == 3:
                    r0, r1, r2 = g[2, 0], g[2, 1], g[2, 2]
                elif i == 1:
                    r0 = half * (g[0, 0] + g[1, 0] + g[2, 0])
                    r1 = half * (g[0, 1] + g[1, 1] + g[2, 1])
                    r2 = half * (g[0, 2] + g[1, 2] + g[2, 2])
                else:
                    r0 = half * (g[0, 0] - g[1, 0] + g[2, 0])
                    r1 = half * (g[0, 1] - g[1, 1] + g[2, 1])
                    r2 = half * (g[0, 2] - g[1, 2] + g[2, 2])
                u[4 * i, co, ci] = r0
                u[4 * i + 1, co, ci] = half * (r0 + r1 + r2)
                u[4 * i + 2, co, ci] = half * (r0 - r1 + r2)
                u[4 * i + 3, co, ci] = r2


@serial_kernel
def _product(m, u, v):
    """Write ``m = u @ v`` with the long axis of ``v`` innermost.

    Four rows of ``m`` are accumulated together, four rows of ``v`` at a time,
    so that each accumulator is loaded and stored once per four input channels.
    """
    c_out, c_in = u.shape
    length = v.shape[1]
    co = 0
    while co + 4 <= c_out:
        a0 = m[co]
        a1 = m[co + 1]
        a2 = m[co + 2]
        a3 = m[co + 3]
        a0[:] = 0
        a1[:] = 0
        a2[:] = 0
        a3[:] = 0
        ci = 0
        while ci + 4 <= c_in:
            s0 = v[ci]
            s1 = v[ci + 1]
            s2 = v[ci + 2]
            s3 = v[ci + 3]
            w00, w01, w02, w03 = u[co, ci], u[co, ci + 1], u[co, ci + 2], u[co, ci + 3]
            w10, w11, w12, w13 = (
                u[co + 1, ci],
                u[co + 1, ci + 1],
                u[co + 1, ci + 2],
                u[co + 1, ci + 3],
            )
            w20, w21, w22, w23 = (
                u[co + 2, ci],
                u[co + 2, ci + 1],
                u[co + 2, ci + 2],
                u[co + 2, ci + 3],
            )
            w30, w31, w32, w33 = (
                u[co + 3, ci],
                u[co + 3, ci + 1],
                u[co + 3, ci + 2],
                u[co + 3, ci + 3],
            )
            for q in range(length):
                v0 = s0[q]
                v1 = s1[q]
                v2 = s2[q]
                v3 = s3[q]
                a0[q] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
                a1[q] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
                a2[q] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
                a3[q] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3
            ci += 4
        while ci < c_in:
            s0 = v[ci]
            w0, w1, w2, w3 = u[co, ci], u[co + 1, ci], u[co + 2, ci], u[co + 3, ci]
            for q in range(length):
                v0 = s0[q]
                a0[q] += w0 * v0
                a1[q] += w1 * v0
                a2[q] += w2 * v0
                a3[q] += w3 * v0
            ci += 1
        co += 4
    while co < c_out:
        a0 = m[co]
        a0[:] = 0
        for ci in range(c_in):
            s0 = v[ci]
            w0 = u[co, ci]
            for q in range(length):
                a0[q] += w0 * s0[q]
        co += 1


@serial_kernel
def _input_tile_row(
    first_even, first_odd, second_even, second_odd, sign, v, i, start, per
):
    """Write row ``i`` of ``B^T d B`` for every tile of a channel.

    Row ``i`` of ``B^T d`` is ``first + sign * second`` for two tile rows, given
    as their even and odd columns (tile column ``p`` starts at element ``p``),
    and its columns combine as the rows do; ``v[4 * i + j, start + p]`` receives
    ``(B^T d B)[i, j]`` of tile column ``p < per``. ``sign`` is 1 or -1.
    """
    # One 1-d view per output row: a 2-d slice of v would lose its contiguity.
    row = 4 * i
    e0 = v[row, start : start + per]
    e1 = v[row + 1, start : start + per]
    e2 = v[row + 2, start : start + per]
    e3 = v[row + 3, start : start + per]
    for p in range(per):
        c0 = first_even[p] + sign * second_even[p]
        c1 = first_odd[p] + sign * second_odd[p]
        c2 = first_even[p + 1] + sign * second_even[p + 1]
        c3 = first_odd[p + 1] + sign * second_odd[p + 1]
        e0[p] = c0 - c2
        e1[p] = c1 + c2
        e2[p] = c2 - c1
        e3[p] = c1 - c3


@serial_kernel
def _input_tiles(ee, eo, oe, oo, v, start, per, wh):
    """Write the 16 transformed values of every tile of one channel.

    ``ee`` .. ``oo`` are the parity planes (row parity first) of the padded
    input; ``v[4 * i + j, start + p]`` receives ``(B^T d B)[i, j]`` of tile
    column ``p < per``. Row ``i`` of ``B^T d`` combines tile rows as ``d0 - d2``,
    ``d1 + d2``, ``d2 - d1``, ``d1 - d3``, and so do the columns.
    """
    # Tile rows 0 and 1 are the planes' row ty (offset 0), rows 2 and 3 row ty + 1
    # (offset wh); columns 0 and 1 are element p, columns 2 and 3 element p + 1.
    d0_even, d0_odd = ee, eo
    d1_even, d1_odd = oe, oo
    d2_even, d2_odd = ee[wh:], eo[wh:]
    d3_even, d3_odd = oe[wh:], oo[wh:]
    one = v.dtype.type(1)
    _input_tile_row(d0_even, d0_odd, d2_even, d2_odd, -one, v, 0, start, per)
    _input_tile_row(d1_even, d1_odd, d2_even, d2_odd, one, v, 1, start, per)
    _input_tile_row(d2_even, d2_odd, d1_even, d1_odd, -one, v, 2, start, per)
    _input_tile_row(d1_even, d1_odd, d3_even, d3_odd, -one, v, 3, start, per)


@serial_below(3, extent_arg=0)
@parallel_kernel
def conv2d_winograd(x, u, bias, y, pad_top, pad_left, group, relu):
    """3x3, stride-1, single-group convolution written straight into NCHW output.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        C-contiguous input.
    u : ndarray, shape (16, C_out, C_in)
        Filters transformed by :func:`winograd_filters`.
    bias : ndarray, shape (C_out,)
        Per-channel offset (zeros for a convolution without bias).
    y : ndarray, shape (N, C_out, H_out, W_out)
        Output, overwritten; ``H_out = H + pad_top + pad_bottom - 2`` for a
        bottom padding of at most 2, likewise for the width.
    pad_top, pad_left : int
        Top and left zero padding, 0 to 2.
    group : int
        Samples whose tiles share one set of matrix products (a ``prange``
        iteration); choose it from the shapes alone, so that the result does
        not depend on the thread count.
    relu : bool
        Whether to write ``relu(conv + bias)`` (0 for negative values, NaN kept)
        instead of ``conv + bias``, in the same pass.
    """
    n_batch, c_in, h, w = x.shape
    c_out = u.shape[1]
    h_out, w_out = y.shape[2], y.shape[3]
    th = (h_out + 1) // 2
    tw = (w_out + 1) // 2
    wh = tw + 1
    per = th * wh
    plane = (th + 1) * wh + 1
    zero = y.dtype.type(0)
    n_groups = (n_batch + group - 1) // group

    # Each iteration owns the samples of its group: their y and its scratch.
    for g in prange(n_groups):
        n0 = g * group
        n1 = min(n_batch, n0 + group)
        count = (n1 - n0) * per
        ee = np.zeros(plane, dtype=x.dtype)
        eo = np.zeros(plane, dtype=x.dtype)
        oe = np.zeros(plane, dtype=x.dtype)
        oo = np.zeros(plane, dtype=x.dtype)
        row = np.zeros(2 * wh, dtype=x.dtype)
        # Rows of v and m are 16 elements longer than needed, so that the 16
        # rows a transform reads or writes together do not start 4 KiB apart
        # (a multiple of 4 KiB would put them all in the same L1 cache sets).
        v = np.empty((16, c_in * count + 16), dtype=x.dtype)
        m = np.empty((16, c_out * count + 16), dtype=x.dtype)
        phases = np.empty((4, per), dtype=x.dtype)

        for n in range(n0, n1):
            base = (n - n0) * per
            for c in range(c_in):
                src = x[n, c]
                for r in range(h):
                    row[pad_left : pad_left + w] = src[r]
                    rr = r + pad_top
                    start = (rr // 2) * wh
                    if rr % 2 == 0:
                        even = ee[start : start + wh]
                        odd = eo[start : start + wh]
                    else:
                        even = oe[start : start + wh]
                        odd = oo[start : start + wh]
                    for j in range(wh):
                        even[j] = row[2 * j]
                        odd[j] = row[2 * j + 1]
                start = c * count + base
                _input_tiles(ee, eo, oe, oo, v, start, per, wh)

        for t in range(16):
            _product(
                m[t, : c_out * count].reshape((c_out, count)),
                u[t],
                v[t, : c_in * count].reshape((c_in, count)),
            )

        p0 = phases[0]
        p1 = phases[1]
        p2 = phases[2]
        p3 = phases[3]
        for n in range(n0, n1):
            base = (n - n0) * per
            for co in range(c_out):
                offset = bias[co]
                s = co * count + base
                e = s + per
                m0, m1, m2, m3 = m[0, s:e], m[1, s:e], m[2, s:e], m[3, s:e]
                m4, m5, m6, m7 = m[4, s:e], m[5, s:e], m[6, s:e], m[7, s:e]
                m8, m9, m10, m11 = m[8, s:e], m[9, s:e], m[10, s:e], m[11, s:e]
                m12, m13, m14, m15 = m[12, s:e], m[13, s:e], m[14, s:e], m[15, s:e]
                for q in range(per):
                    z00 = m0[q] + m4[q] + m8[q]
                    z01 = m1[q] + m5[q] + m9[q]
                    z02 = m2[q] + m6[q] + m10[q]
                    z03 = m3[q] + m7[q] + m11[q]
                    z10 = m4[q] - m8[q] - m12[q]
                    z11 = m5[q] - m9[q] - m13[q]
                    z12 = m6[q] - m10[q] - m14[q]
                    z13 = m7[q] - m11[q] - m15[q]
                    p0[q] = z00 + z01 + z02 + offset
                    p1[q] = z01 - z02 - z03 + offset
                    p2[q] = z10 + z11 + z12 + offset
                    p3[q] = z11 - z12 - z13 + offset
                if relu:
                    for k in range(per):
                        p0[k] = zero if p0[k] < zero else p0[k]
                        p1[k] = zero if p1[k] < zero else p1[k]
                        p2[k] = zero if p2[k] < zero else p2[k]
                        p3[k] = zero if p3[k] < zero else p3[k]
                dst = y[n, co]
                for oh in range(h_out):
                    out = dst[oh]
                    start = (oh // 2) * wh
                    left = phases[2 * (oh % 2), start : start + wh]
                    right = phases[2 * (oh % 2) + 1, start : start + wh]
                    for k in range(w_out // 2):
                        out[2 * k] = left[k]
                        out[2 * k + 1] = right[k]
                    if w_out % 2:
                        out[w_out - 1] = left[w_out // 2]


@serial_below(0, extent_arg=0)
@parallel_kernel
def sums_of_squares(x, out):
    """Write ``out[n] = sum(x[n] ** 2)``, summed in the dtype of ``x``.

    The sum is NaN where ``x[n]`` holds a NaN and inf where it holds an inf or
    where the sum overflows; its square root bounds every ``|x[n]|`` otherwise.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
        C-contiguous.
    out : ndarray, shape (N,), float64
        Output, overwritten (0 for an empty sample).
    """
    n_batch = x.shape[0]
    flat = x.reshape((n_batch, -1))
    # Each iteration owns out[n].
    for n in prange(n_batch):
        row = flat[n]
        total = row.dtype.type(0)
        for k in range(row.shape[0]):
            total += row[k] * row[k]
        out[n] = total
