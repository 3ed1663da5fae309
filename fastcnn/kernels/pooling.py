"""Numba kernels for 2-d max and average pooling, forward and backward.

Every kernel works on C-contiguous stacks of planes: ``x`` of shape
``(planes, h, w)`` (``planes = N * C``) and ``y`` of shape ``(planes, h_out,
w_out)``. Output ``(oh, ow)`` pools the window whose top-left corner is input
``(oh * sh - ph, ow * sw - pw)``, clipped to the input.

Windows that lie wholly inside the input ("interior" outputs, the bulk of the
work) are reduced by whole-plane passes over the flattened plane: pass ``t``
combines the running result at flat position ``q`` with the one at ``q +
shift_t``, first along rows, then down columns. These loops are long and
branch-free, so LLVM vectorises them. Flat positions whose window would wrap
around a row end are computed too but never read. The few windows clipped by
padding or by ``ceil_mode`` go through a plain loop over the window.

The parallel kernels split the planes into one contiguous block per thread:
each ``prange`` iteration owns whole planes of the output and its own scratch
buffers, so results do not depend on the number of threads. Arithmetic is in the
arrays' dtype.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel, serial_kernel

# ----------------------------------------------------------------------------
# Shared geometry
# ----------------------------------------------------------------------------


@serial_kernel
def _interior_range(size, size_out, k, s, p):
    """Return ``(lo, hi)``: outputs ``lo <= o < hi`` have windows inside the input.

    Parameters
    ----------
    size, size_out, k, s, p : int
        Input length, output length, kernel, stride and padding along one axis.
    """
    lo = (p + s - 1) // s
    hi = min(size_out, (size + p - k) // s + 1)
    return lo, max(lo, hi)


@serial_kernel
def _skipped_columns(oh, oh_lo, oh_hi, ow_lo, ow_hi, w_out):
    """Return ``(first, count)``: the interior columns of output row ``oh``.

    They are ``first <= ow < first + count``, none when the row is not interior.
    """
    if oh_lo <= oh < oh_hi and ow_lo < ow_hi:
        return ow_lo, ow_hi - ow_lo
    return w_out, 0


@serial_kernel
def _copy_into(src, out, n):
    """``out[q] = src[q]`` for ``q < n``."""
    for q in range(n):
        out[q] = src[q]


@serial_kernel
def _zero(out, start, stop):
    """``out[q] = 0`` for ``start <= q < stop``."""
    for q in range(start, stop):
        out[q] = 0


@serial_kernel
def _add_into(src, src_start, out, out_start, n):
    """``out[out_start + q] += src[src_start + q]`` for ``q < n`` (no overlap)."""
    for q in range(n):
        out[np.uintp(out_start + q)] += src[np.uintp(src_start + q)]


@serial_kernel
def _block(block, blocks, planes):
    """Return ``(first, stop)``: the planes of block ``block`` of ``blocks``."""
    return block * planes // blocks, (block + 1) * planes // blocks


# ----------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------


@serial_kernel
def _max_fold_shifted(src_v, src_i, shift, n, out_v, out_i):
    """Combine the running maxima at ``q`` and ``q + shift`` for ``q < n``.

    Parameters
    ----------
    src_v : numpy.ndarray, shape (>= n + shift,)
        Running maxima, each covering elements that all come before (in
        row-major order) those covered by the maximum ``shift`` places later.
    src_i : numpy.ndarray of int, shape (>= n + shift,)
        Flat indices of those maxima in the plane.
    shift, n : int
        Offset of the second operand and number of positions.
    out_v, out_i : numpy.ndarray, shape (>= n,)
        Combined maxima and indices; must not overlap ``src_v``/``src_i``.

    Notes
    -----
    The later operand wins when it is greater or NaN. Folding in row-major
    order this way keeps the first maximum of a window, or its last NaN, which
    is PyTorch's choice on the CPU. Overlapping operands are harmless: the
    winner depends only on which elements are covered.
    """
    for q in range(n):
        best = src_v[q]
        best_index = src_i[q]
        later = np.uintp(q + shift)
        v = src_v[later]
        v_index = src_i[later]
        take = (v > best) | (v != v)
        out_v[q] = v if take else best
        out_i[q] = v_index if take else best_index


@serial_kernel
def _window_max(xp, h_lo, h_hi, w_lo, w_hi):
    """Return ``(max, flat index)`` of ``xp[h_lo:h_hi, w_lo:w_hi]`` (non-empty).

    The first maximum in row-major order wins; a NaN wins over any number and
    the last NaN wins over earlier ones.
    """
    w = xp.shape[1]
    best = xp[h_lo, w_lo]
    best_index = h_lo * w + w_lo
    for ih in range(h_lo, h_hi):
        for iw in range(w_lo, w_hi):
            v = xp[ih, iw]
            if v > best or v != v:
                best = v
                best_index = ih * w + iw
    return best, best_index


@serial_kernel
def _fold_shifts(kh, kw, w):
    """Return the flat shifts of the passes that reduce a ``kh x kw`` window.

    Along each axis the covered span doubles each pass until it reaches the
    kernel size (the last pass may overlap the previous span), so a window of
    ``k`` elements takes ``ceil(log2(k))`` passes.
    """
    shifts = np.empty(64, np.int64)
    count = 0
    for k, step in ((kw, 1), (kh, w)):
        span = 1
        while span < k:
            shifts[count] = min(span, k - span) * step
            count += 1
            span = min(2 * span, k)
    return shifts[:count]


@serial_kernel
def _max_pool_planes(x, kh, kw, sh, sw, ph, pw, y, indices, first, stop):
    """Max-pool planes ``first <= p < stop`` of ``x`` (see max_pool2d_forward)."""
    h, w = x.shape[1], x.shape[2]
    h_out, w_out = y.shape[1], y.shape[2]
    hw = h * w
    oh_lo, oh_hi = _interior_range(h, h_out, kh, sh, ph)
    ow_lo, ow_hi = _interior_range(w, w_out, kw, sw, pw)
    interior = oh_hi > oh_lo and ow_hi > ow_lo
    shifts = _fold_shifts(kh, kw, w)
    flat_index = np.arange(hw).astype(indices.dtype)
    a_v = np.empty(hw, x.dtype)
    a_i = np.empty(hw, indices.dtype)
    b_v = np.empty(hw, x.dtype)
    b_i = np.empty(hw, indices.dtype)

    for p in range(first, stop):
        xp = x[p]
        if interior:
            # Reduce every window anchored in the plane; the result is in a_*.
            xf = xp.reshape(hw)
            n = hw
            if shifts.size == 0:
                _copy_into(xf, a_v, hw)
                _copy_into(flat_index, a_i, hw)
            for t in range(shifts.size):
                n -= shifts[t]
                if t == 0:
                    _max_fold_shifted(xf, flat_index, shifts[t], n, a_v, a_i)
                else:
                    _max_fold_shifted(a_v, a_i, shifts[t], n, b_v, b_i)
                    a_v, b_v = b_v, a_v
                    a_i, b_i = b_i, a_i
            for oh in range(oh_lo, oh_hi):
                base = (oh * sh - ph) * w - pw
                for ow in range(ow_lo, ow_hi):
                    q = np.uintp(base + ow * sw)
                    y[p, oh, ow] = a_v[q]
                    indices[p, oh, ow] = a_i[q]

        for oh in range(h_out):
            h0 = oh * sh - ph
            skip_lo, skip = _skipped_columns(oh, oh_lo, oh_hi, ow_lo, ow_hi, w_out)
            for t in range(w_out - skip):
                ow = t if t < skip_lo else t + skip
                w0 = ow * sw - pw
                best, best_index = _window_max(
                    xp, max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w)
                )
                y[p, oh, ow] = best
                indices[p, oh, ow] = best_index


@parallel_kernel
def max_pool2d_forward(x, kh, kw, sh, sw, ph, pw, y, indices, blocks):
    """Write the window maxima of ``x`` to ``y`` and their flat indices to ``indices``.

    Parameters
    ----------
    x : numpy.ndarray, shape (planes, h, w)
        Input planes.
    kh, kw, sh, sw, ph, pw : int
        Kernel size, stride and padding (rows, then columns). Every window must
        hold at least one input element (``ph <= kh // 2`` and PyTorch's output
        size rule guarantee it).
    y : numpy.ndarray, shape (planes, h_out, w_out)
        Output maxima, same dtype as ``x``.
    indices : numpy.ndarray of int32 or int64, shape (planes, h_out, w_out)
        Output: ``ih * w + iw`` of each maximum within its plane.
    blocks : int
        Number of blocks the planes are split into, one ``prange`` iteration
        each (the thread count is a good choice); results do not depend on it.

    Notes
    -----
    Padded cells never win. Ties go to the first maximum in row-major order; a
    window holding NaN gives NaN, with the index of its last NaN.
    """
    planes = x.shape[0]
    blocks = max(1, min(planes, blocks))
    # Each iteration owns the planes of one block of y and indices.
    for block in prange(blocks):
        first, stop = _block(block, blocks, planes)
        _max_pool_planes(x, kh, kw, sh, sw, ph, pw, y, indices, first, stop)


@parallel_kernel
def max_pool2d_backward(grad_output, indices, grad_input):
    """Route each output gradient to the input element that was the maximum.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (planes, h_out, w_out)
        Gradient with respect to the pooled output.
    indices : numpy.ndarray of int32 or int64, shape (planes, h_out, w_out)
        Flat indices written by :func:`max_pool2d_forward`.
    grad_input : numpy.ndarray, shape (planes, h, w)
        Output, overwritten: the sum of the gradients routed to each element.
    """
    planes, h, w = grad_input.shape
    h_out, w_out = grad_output.shape[1], grad_output.shape[2]
    # Each iteration owns plane p of grad_input (overlapping windows of one
    # plane accumulate within the iteration).
    for p in prange(planes):
        g = grad_input[p].reshape(h * w)
        _zero(g, 0, h * w)
        for oh in range(h_out):
            for ow in range(w_out):
                g[indices[p, oh, ow]] += grad_output[p, oh, ow]


# ----------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------


@serial_kernel
def _divisor(h0, w0, kh, kw, h, w, ph, pw, count_include_pad):
    """Return the divisor of the window with top-left corner ``(h0, w0)``.

    With ``count_include_pad`` it is the window's area within the padded input
    (cells that ``ceil_mode`` adds beyond the padding never count), else the
    number of input elements it covers.
    """
    if count_include_pad:
        return (min(h0 + kh, h + ph) - h0) * (min(w0 + kw, w + pw) - w0)
    return (min(h0 + kh, h) - max(h0, 0)) * (min(w0 + kw, w) - max(w0, 0))


@serial_kernel
def _avg_pool_planes(x, kh, kw, sh, sw, ph, pw, count_include_pad, y, first, stop):
    """Average-pool planes ``first <= p < stop`` of ``x`` (see avg_pool2d_forward)."""
    h, w = x.shape[1], x.shape[2]
    h_out, w_out = y.shape[1], y.shape[2]
    hw = h * w
    oh_lo, oh_hi = _interior_range(h, h_out, kh, sh, ph)
    ow_lo, ow_hi = _interior_range(w, w_out, kw, sw, pw)
    interior = oh_hi > oh_lo and ow_hi > ow_lo
    area = y.dtype.type(kh * kw)
    row_sums = np.empty(hw, x.dtype)
    window_sums = np.empty(hw, x.dtype)
    n_rows = hw - (kw - 1)
    n_windows = n_rows - (kh - 1) * w

    for p in range(first, stop):
        xp = x[p]
        if interior:
            # Sums of kw consecutive elements, then of kh such sums a row apart.
            xf = xp.reshape(hw)
            _copy_into(xf, row_sums, n_rows)
            for j in range(1, kw):
                _add_into(xf, j, row_sums, 0, n_rows)
            _copy_into(row_sums, window_sums, n_windows)
            for r in range(1, kh):
                _add_into(row_sums, r * w, window_sums, 0, n_windows)
            for oh in range(oh_lo, oh_hi):
                base = (oh * sh - ph) * w - pw
                for ow in range(ow_lo, ow_hi):
                    y[p, oh, ow] = window_sums[np.uintp(base + ow * sw)] / area

        for oh in range(h_out):
            h0 = oh * sh - ph
            skip_lo, skip = _skipped_columns(oh, oh_lo, oh_hi, ow_lo, ow_hi, w_out)
            for t in range(w_out - skip):
                ow = t if t < skip_lo else t + skip
                w0 = ow * sw - pw
                total = x.dtype.type(0)
                for ih in range(max(h0, 0), min(h0 + kh, h)):
                    for iw in range(max(w0, 0), min(w0 + kw, w)):
                        total += xp[ih, iw]
                count = _divisor(h0, w0, kh, kw, h, w, ph, pw, count_include_pad)
                y[p, oh, ow] = total / y.dtype.type(count)


@parallel_kernel
def avg_pool2d_forward(x, kh, kw, sh, sw, ph, pw, count_include_pad, y, blocks):
    """Write the window means of ``x`` to ``y``.

    Parameters
    ----------
    x : numpy.ndarray, shape (planes, h, w)
        Input planes.
    kh, kw, sh, sw, ph, pw : int
        Kernel size, stride and padding (rows, then columns).
    count_include_pad : int
        1: divide by the window's area within the padded input; 0: divide by
        the number of input elements in the window.
    y : numpy.ndarray, shape (planes, h_out, w_out)
        Output means, same dtype as ``x``.
    blocks : int
        Number of blocks the planes are split into, one ``prange`` iteration
        each (the thread count is a good choice); results do not depend on it.
    """
    planes = x.shape[0]
    blocks = max(1, min(planes, blocks))
    # Each iteration owns the planes of one block of y.
    for block in prange(blocks):
        first, stop = _block(block, blocks, planes)
        _avg_pool_planes(x, kh, kw, sh, sw, ph, pw, count_include_pad, y, first, stop)


@serial_kernel
def _avg_pool_backward_planes(
    grad_output, kh, kw, sh, sw, ph, pw, count_include_pad, grad_input, first, stop
):
    """Average-pool backward for planes ``first <= p < stop``."""
    h, w = grad_input.shape[1], grad_input.shape[2]
    h_out, w_out = grad_output.shape[1], grad_output.shape[2]
    hw = h * w
    oh_lo, oh_hi = _interior_range(h, h_out, kh, sh, ph)
    ow_lo, ow_hi = _interior_range(w, w_out, kw, sw, pw)
    interior = oh_hi > oh_lo and ow_hi > ow_lo
    area = grad_input.dtype.type(kh * kw)
    n_rows = hw - (kw - 1)
    n_windows = n_rows - (kh - 1) * w
    window_grads = np.zeros(hw, grad_input.dtype)
    row_grads = np.empty(hw, grad_input.dtype)

    for p in range(first, stop):
        g = grad_input[p]
        gf = g.reshape(hw)
        if interior:
            # The transpose of the forward passes: place each interior gradient
            # at its window's anchor, spread it down kh rows, then along kw
            # columns.
            for oh in range(oh_lo, oh_hi):
                base = (oh * sh - ph) * w - pw
                for ow in range(ow_lo, ow_hi):
                    q = np.uintp(base + ow * sw)
                    window_grads[q] = grad_output[p, oh, ow] / area
            _copy_into(window_grads, row_grads, n_windows)
            _zero(row_grads, n_windows, n_rows)
            for r in range(1, kh):
                _add_into(window_grads, 0, row_grads, r * w, n_windows)
            _copy_into(row_grads, gf, n_rows)
            _zero(gf, n_rows, hw)
            for j in range(1, kw):
                _add_into(row_grads, 0, gf, j, n_rows)
            for oh in range(oh_lo, oh_hi):
                base = (oh * sh - ph) * w - pw
                for ow in range(ow_lo, ow_hi):
                    window_grads[np.uintp(base + ow * sw)] = 0
        else:
            _zero(gf, 0, hw)

        for oh in range(h_out):
            h0 = oh * sh - ph
            skip_lo, skip = _skipped_columns(oh, oh_lo, oh_hi, ow_lo, ow_hi, w_out)
            for t in range(w_out - skip):
                ow = t if t < skip_lo else t + skip
                w0 = ow * sw - pw
                count = _divisor(h0, w0, kh, kw, h, w, ph, pw, count_include_pad)
                share = grad_output[p, oh, ow] / g.dtype.type(count)
                for ih in range(max(h0, 0), min(h0 + kh, h)):
                    for iw in range(max(w0, 0), min(w0 + kw, w)):
                        g[ih, iw] += share


@parallel_kernel
def avg_pool2d_backward(
    grad_output, kh, kw, sh, sw, ph, pw, count_include_pad, grad_input, blocks
):
    """Spread each output gradient evenly over the input elements of its window.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (planes, h_out, w_out)
        Gradient with respect to the pooled output.
    kh, kw, sh, sw, ph, pw : int
        Kernel size, stride and padding of the forward pass.
    count_include_pad : int
        The forward pass's divisor rule (see :func:`avg_pool2d_forward`).
    grad_input : numpy.ndarray, shape (planes, h, w)
        Output, overwritten with the gradient with respect to the input.
    blocks : int
        Number of blocks the planes are split into, one ``prange`` iteration
        each (the thread count is a good choice); results do not depend on it.
    """
    planes = grad_input.shape[0]
    blocks = max(1, min(planes, blocks))
    # Each iteration owns the planes of one block of grad_input.
    for block in prange(blocks):
        first, stop = _block(block, blocks, planes)
        _avg_pool_backward_planes(
            grad_output,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            count_include_pad,
            grad_input,
            first,
            stop,
        )
