"""Numba kernels for 2-d max and average pooling, forward and backward.

Every kernel works on C-contiguous stacks of planes: ``x`` of shape
``(planes, h, w)`` (``planes = N * C``) and ``y`` of shape ``(planes, h_out,
w_out)``. Output ``(oh, ow)`` pools the window whose top-left corner is input
``(oh * sh - ph, ow * sw - pw)``.

The general kernels first embed each plane in a padded plane of ``hp x wp``
cells that holds every window whole: the padding, plus the cells beyond it that
``ceil_mode`` may add, are ``-inf`` for max pooling and 0 for average pooling
(when there are none the input plane is used as it is). Windows are then
reduced by passes over the whole flattened padded plane, each a long
branch-free loop that LLVM vectorises: first the ``kw`` elements of a row that
start at every flat position, then the ``kh`` such row results a row (``wp``
positions) apart. Positions whose window would wrap around a row end are
computed too but never read. A table of the top-left position of every
output's window then moves the results to the output.

The parallel kernels split the planes into blocks, one ``prange`` iteration
each: an iteration owns whole planes of the output and its own scratch buffers,
so results do not depend on the number of threads or blocks. Arithmetic is in
the arrays' dtype.

2x2 windows with stride 2 and no padding over even heights and widths have
kernels of their own (the ``*_2x2_*`` kernels at the end of this module), which
read the input once, without a padded copy, and split output rows rather than
planes among the threads.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel, serial_kernel
from fastcnn.kernels._small import SizedKernel, serial_below

# ----------------------------------------------------------------------------
# Geometry and helpers shared by max and average pooling
# ----------------------------------------------------------------------------


@serial_kernel
def _padded_shape(h, w, h_out, w_out, kh, kw, sh, sw, ph, pw):
    """Return ``(hp, wp)``: a padded plane holding the input and every window.

    The input sits at rows ``ph ... ph + h - 1`` and columns ``pw ... pw + w - 1``;
    window ``(oh, ow)`` covers rows ``oh * sh ... oh * sh + kh - 1`` and columns
    ``ow * sw ... ow * sw + kw - 1``.
    """
    hp = max(h + 2 * ph, (h_out - 1) * sh + kh)
    wp = max(w + 2 * pw, (w_out - 1) * sw + kw)
    return hp, wp


@serial_kernel
def _corners(h_out, w_out, sh, sw, wp):
    """Return the flat padded position of every output window's top-left cell.

    Unsigned, so that indexing with them needs no negative-index handling.
    """
    corners = np.empty(h_out * w_out, np.uintp)
    for oh in range(h_out):
        for ow in range(w_out):
            corners[oh * w_out + ow] = oh * sh * wp + ow * sw
    return corners


@serial_kernel
def _doubling_shifts(k, step):
    """Return the shifts of the passes that combine ``k`` results ``step`` apart.

    The covered span doubles each pass until it reaches ``k`` (the last pass may
    overlap the previous span), so ``k`` results take ``ceil(log2(k))`` passes;
    the shifts add up to ``(k - 1) * step``.
    """
    shifts = np.empty(64, np.int64)
    count = 0
    span = 1
    while span < k:
        shifts[count] = min(span, k - span) * step
        count += 1
        span = min(2 * span, k)
    return shifts[:count]


@serial_kernel
def _embed(xp, ph, pw, wp, out):
    """Copy the plane ``xp`` into the flat padded plane ``out`` at ``(ph, pw)``."""
    h, w = xp.shape
    for ih in range(h):
        start = (ih + ph) * wp + pw
        for iw in range(w):
            out[np.uintp(start + iw)] = xp[ih, iw]


@serial_kernel
def _crop(src, ph, pw, wp, out):
    """Copy the input part of the flat padded plane ``src`` into the plane ``out``."""
    h, w = out.shape
    for ih in range(h):
        start = (ih + ph) * wp + pw
        for iw in range(w):
            out[ih, iw] = src[np.uintp(start + iw)]


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
#
# The passes combine two running maxima, an earlier and a later one (in
# row-major order), keeping the later only when it is strictly greater. Folding
# a window's elements this way keeps its first maximum, as PyTorch does on the
# CPU, and overlapping operands do not change the result. The comparison is a
# single ordered one, which compiles to max and conditional-move instructions
# without branches; it gives the right answer only for finite input (and -inf
# padding), so planes holding NaN or infinity take the exact per-window loop.


@serial_kernel
def _all_finite(values):
    """Return whether no element of ``values`` is NaN or infinite."""
    inf = values.dtype.type(np.inf)
    bad = values.dtype.type(0)
    for q in range(values.size):
        bad += 0 if abs(values[q]) < inf else 1
    return bad == 0


@serial_kernel
def _max_shifted(src_v, src_i, shift, n, out_v, out_i):
    """Combine the running maxima ``src[u]`` and ``src[u + shift]`` for ``u < n``.

    Parameters
    ----------
    src_v : numpy.ndarray, shape (>= n + shift,)
        Running maxima (or the flat padded plane itself).
    src_i : numpy.ndarray of int, shape (>= n + shift,)
        The input flat index of each maximum.
    shift, n : int
        Offset of the later operand and number of positions.
    out_v, out_i : numpy.ndarray, shape (>= n,)
        Combined maxima and indices; must not overlap ``src_v`` or ``src_i``.
    """
    for u in range(n):
        best = src_v[u]
        best_index = src_i[u]
        later = np.uintp(u + shift)
        v = src_v[later]
        v_index = src_i[later]
        take = v > best
        out_v[u] = v if take else best
        out_i[u] = v_index if take else best_index


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
def _padded_flat_index(h, w, hp, wp, ph, pw, dtype_like):
    """Return the input flat index of every padded cell (0 for padding cells)."""
    flat_index = np.zeros(hp * wp, dtype_like.dtype)
    for ih in range(h):
        for iw in range(w):
            flat_index[(ih + ph) * wp + iw + pw] = ih * w + iw
    return flat_index


@serial_kernel
def _max_pool_planes(x, kh, kw, sh, sw, ph, pw, y, indices, first, stop):
    """Max-pool planes ``first <= p < stop`` (see :func:`max_pool2d_forward`)."""
    planes, h, w = x.shape
    h_out, w_out = y.shape[1], y.shape[2]
    hp, wp = _padded_shape(h, w, h_out, w_out, kh, kw, sh, sw, ph, pw)
    size = hp * wp
    padded = hp != h or wp != w
    corners = _corners(h_out, w_out, sh, sw, wp)
    shifts = np.concatenate((_doubling_shifts(kw, 1), _doubling_shifts(kh, wp)))
    flat_index = _padded_flat_index(h, w, hp, wp, ph, pw, indices)
    plane = np.full(size, -np.inf, x.dtype)
    a_v = np.empty(size, x.dtype)
    a_i = np.empty(size, indices.dtype)
    b_v = np.empty(size, x.dtype)
    b_i = np.empty(size, indices.dtype)
    y_flat = y.reshape(planes, h_out * w_out)
    indices_flat = indices.reshape(planes, h_out * w_out)

    for p in range(first, stop):
        xp = x[p]
        if not _all_finite(xp.reshape(h * w)):
            for oh in range(h_out):
                h0 = oh * sh - ph
                for ow in range(w_out):
                    w0 = ow * sw - pw
                    best, best_index = _window_max(
                        xp, max(h0, 0), min(h0 + kh, h), max(w0, 0), min(w0 + kw, w)
                    )
                    y[p, oh, ow] = best
                    indices[p, oh, ow] = best_index
            continue

        # Maxima over kw columns at every position, then over kh rows; in a_*.
        n = size - (shifts[0] if shifts.size > 0 else 0)
        if padded:
            _embed(xp, ph, pw, wp, plane)
            _max_shifted(plane, flat_index, size - n, n, a_v, a_i)
        else:
            _max_shifted(xp.reshape(size), flat_index, size - n, n, a_v, a_i)
        for t in range(1, shifts.size):
            n -= shifts[t]
            _max_shifted(a_v, a_i, shifts[t], n, b_v, b_i)
            a_v, b_v = b_v, a_v
            a_i, b_i = b_i, a_i
        for j in range(corners.size):
            y_flat[p, j] = a_v[corners[j]]
            indices_flat[p, j] = a_i[corners[j]]


@serial_below(0)
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


@serial_kernel
def _scatter_add(values, indices, out):
    """Zero ``out``, then ``out[indices[t]] += values[t]`` for every ``t``."""
    _zero(out, 0, out.size)
    for t in range(values.size):
        out[indices[t]] += values[t]


@serial_below(2)
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
    grad_flat = grad_output.reshape(planes, h_out * w_out)
    indices_flat = indices.reshape(planes, h_out * w_out)
    grad_input_flat = grad_input.reshape(planes, h * w)
    # Each iteration owns plane p of grad_input (overlapping windows of one
    # plane accumulate within the iteration).
    for p in prange(planes):
        _scatter_add(grad_flat[p], indices_flat[p], grad_input_flat[p])


# ----------------------------------------------------------------------------
# Average pooling
# ----------------------------------------------------------------------------


@serial_kernel
def _divisors(h, w, kh, kw, sh, sw, ph, pw, count_include_pad, like):
    """Return the divisor of every output window, shape ``like.shape[1:]`` flat.

    With ``count_include_pad`` it is the window's area within the padded input
    (cells that ``ceil_mode`` adds beyond the padding never count), else the
    number of input elements it covers.
    """
    h_out, w_out = like.shape[1], like.shape[2]
    divisors = np.empty(h_out * w_out, like.dtype)
    for oh in range(h_out):
        h0 = oh * sh - ph
        for ow in range(w_out):
            w0 = ow * sw - pw
            if count_include_pad:
                rows = min(h0 + kh, h + ph) - h0
                cols = min(w0 + kw, w + pw) - w0
            else:
                rows = min(h0 + kh, h) - max(h0, 0)
                cols = min(w0 + kw, w) - max(w0, 0)
            divisors[oh * w_out + ow] = rows * cols
    return divisors


@serial_kernel
def _avg_pool_planes(x, kh, kw, sh, sw, ph, pw, count_include_pad, y, first, stop):
    """Average-pool planes ``first <= p < stop`` (see :func:`avg_pool2d_forward`)."""
    planes, h, w = x.shape
    h_out, w_out = y.shape[1], y.shape[2]
    hp, wp = _padded_shape(h, w, h_out, w_out, kh, kw, sh, sw, ph, pw)
    size = hp * wp
    padded = hp != h or wp != w
    corners = _corners(h_out, w_out, sh, sw, wp)
    divisors = _divisors(h, w, kh, kw, sh, sw, ph, pw, count_include_pad, y)
    n_rows = size - (kw - 1)
    n_windows = n_rows - (kh - 1) * wp
    plane = np.zeros(size, x.dtype)
    row_sums = np.empty(size, x.dtype)
    window_sums = np.empty(size, x.dtype)
    y_flat = y.reshape(planes, h_out * w_out)

    for p in range(first, stop):
        # Sums of kw consecutive elements at every position, then of kh such
        # sums a row apart.
        xp = x[p]
        if padded:
            _embed(xp, ph, pw, wp, plane)
            _row_sums(plane, kw, n_rows, row_sums)
        else:
            _row_sums(xp.reshape(size), kw, n_rows, row_sums)
        _copy_into(row_sums, window_sums, n_windows)
        for r in range(1, kh):
            _add_into(row_sums, r * wp, window_sums, 0, n_windows)
        for j in range(corners.size):
            y_flat[p, j] = window_sums[corners[j]] / divisors[j]


@serial_kernel
def _row_sums(src, kw, n, out):
    """``out[q] = src[q] + ... + src[q + kw - 1]`` for ``q < n``."""
    _copy_into(src, out, n)
    for j in range(1, kw):
        _add_into(src, j, out, 0, n)


@serial_below(0)
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
    cip = count_include_pad
    # Each iteration owns the planes of one block of y.
    for block in prange(blocks):
        first, stop = _block(block, blocks, planes)
        _avg_pool_planes(x, kh, kw, sh, sw, ph, pw, cip, y, first, stop)


@serial_kernel
def _avg_pool_backward_planes(
    grad_output, kh, kw, sh, sw, ph, pw, count_include_pad, grad_input, first, stop
):
    """Average-pool backward for planes ``first <= p < stop``."""
    planes, h, w = grad_input.shape
    h_out, w_out = grad_output.shape[1], grad_output.shape[2]
    hp, wp = _padded_shape(h, w, h_out, w_out, kh, kw, sh, sw, ph, pw)
    size = hp * wp
    padded = hp != h or wp != w
    corners = _corners(h_out, w_out, sh, sw, wp)
    divisors = _divisors(h, w, kh, kw, sh, sw, ph, pw, count_include_pad, grad_output)
    n_rows = size - (kw - 1)
    n_windows = n_rows - (kh - 1) * wp
    window_grads = np.zeros(size, grad_input.dtype)
    row_grads = np.empty(size, grad_input.dtype)
    plane = np.empty(size, grad_input.dtype)
    grad_flat = grad_output.reshape(planes, h_out * w_out)
    grad_input_flat = grad_input.reshape(planes, h * w)

    for p in range(first, stop):
        # The transpose of the forward passes: place each gradient at its
        # window's top-left cell, spread it down kh rows, then along kw columns.
        for j in range(corners.size):
            window_grads[corners[j]] = grad_flat[p, j] / divisors[j]
        _copy_into(window_grads, row_grads, n_windows)
        _zero(row_grads, n_windows, n_rows)
        for r in range(1, kh):
            _add_into(window_grads, 0, row_grads, r * wp, n_windows)
        target = plane if padded else grad_input_flat[p]
        _copy_into(row_grads, target, n_rows)
        _zero(target, n_rows, size)
        for j in range(1, kw):
            _add_into(row_grads, 0, target, j, n_rows)
        if padded:
            _crop(plane, ph, pw, wp, grad_input[p])
        for j in range(corners.size):
            window_grads[corners[j]] = 0


@serial_below(8)
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
    cip = count_include_pad
    # Each iteration owns the planes of one block of grad_input.
    for block in prange(blocks):
        first, stop = _block(block, blocks, planes)
        _avg_pool_backward_planes(
            grad_output, kh, kw, sh, sw, ph, pw, cip, grad_input, first, stop
        )


# ----------------------------------------------------------------------------
# 2x2 windows with stride 2 and no padding, even input sizes
# ----------------------------------------------------------------------------
#
# The common case of a CNN gets kernels of its own, with no padded copy. Output
# row ``r`` (row ``r % h_out`` of plane ``r // h_out``) pools input rows ``2 * r``
# and ``2 * r + 1`` of the planes stacked, as the heights are even. An output row
# holds few elements (14 for a 28-wide input), too few for LLVM's vectorised
# loop, so the kernels work on a "doubled" layout instead: ``2 * w_out``
# entries per output row, entry ``k`` standing for the 2x2 block whose top-left
# input element has the flat index ``2 * k`` (the widths are even). Its first
# half are the output row's windows; its second half are blocks straddling two
# output rows, computed along (the forward pass throws them away) or given the
# output row's gradients again (the average's backward pass, which then writes
# the lower input row). Loops over a chunk of doubled rows are long and
# branch-free.
#
# Max pooling stores, instead of a flat index, the position of each maximum
# within its window (``2 * i + j`` for row ``i``, column ``j``) in one byte, in
# the doubled layout; its backward pass zeroes a chunk of the input gradient,
# then writes each output gradient at its maximum.
#
# The output rows are split into chunks of a fixed size, and the ``prange``
# iterations into whole chunks, so that every chunk is computed the same way
# (vectorised or not) for any number of threads.

#: Elements of the work-measuring array below which the 2x2 kernels run their
#: single-threaded twin: a chunk costs about as much as copying it, so a parallel
#: region (some 90 us to start on workqueue) pays only for inputs of a few
#: megabytes (scaled by :func:`~fastcnn.kernels._small.launch_threshold`).
SERIAL_WORK_2X2 = 1 << 20


class _LargeWorkKernel(SizedKernel):
    """A :class:`SizedKernel` that runs serially below :data:`SERIAL_WORK_2X2`
    elements of work, or when asked for a single block (its last argument)."""

    def __call__(self, *args):
        if args[-1] <= 1:
            return self.serial(*args)
        return super().__call__(*args)


def _serial_below_large(work_arg: int):
    """Like :func:`serial_below`, with the threshold of the 2x2 kernels."""

    def decorate(kernel):
        return _LargeWorkKernel(kernel, work_arg, SERIAL_WORK_2X2)

    return decorate


#: Output rows per chunk times the output width: doubled entries per chunk / 2.
_CHUNK_ENTRIES = 1024


@serial_kernel
def _chunk_rows(w_out):
    """Return the number of output rows per chunk."""
    return max(1, _CHUNK_ENTRIES // w_out)


@serial_kernel
def _chunk_blocks(rows, w_out, blocks):
    """Return ``(chunk_rows, chunks, blocks)`` for ``rows`` output rows."""
    chunk_rows = _chunk_rows(w_out)
    chunks = (rows + chunk_rows - 1) // chunk_rows
    return chunk_rows, chunks, max(1, min(chunks, blocks))


@serial_kernel
def _max_2x2_doubled(top, bottom, n, values, where):
    """Window maxima and positions of doubled entries ``k < n``.

    ``top`` and ``bottom`` start at the top-left input element of entry 0 and
    of the row below it. A later element replaces the running maximum when it
    is greater or NaN, in row-major order: each row's pair, then the two rows.
    """
    for k in range(n):
        left = top[2 * k]
        right = top[2 * k + 1]
        take_top = (right > left) | (right != right)
        upper = right if take_top else left
        left = bottom[2 * k]
        right = bottom[2 * k + 1]
        take_bottom = (right > left) | (right != right)
        lower = right if take_bottom else left
        take_lower = (lower > upper) | (lower != lower)
        values[k] = lower if take_lower else upper
        where[k] = (
            np.uint8(2) + np.uint8(take_bottom) if take_lower else np.uint8(take_top)
        )


@serial_kernel
def _max_2x2_chunks(x, y, positions, chunk_rows, first, stop):
    """Max-pool the output rows of chunks ``first <= c < stop``."""
    rows = y.shape[0] * y.shape[1]
    w_out = y.shape[2]
    w = 2 * w_out
    x_flat = x.reshape(x.size)
    y_flat = y.reshape(y.size)
    positions_flat = positions.reshape(positions.size)
    values = np.empty(2 * chunk_rows * w_out, x.dtype)
    for c in range(first, stop):
        r0 = c * chunk_rows
        r1 = min(r0 + chunk_rows, rows)
        start = 4 * r0 * w_out
        n = (2 * (r1 - r0) - 1) * w_out
        where = positions_flat[2 * r0 * w_out :]
        _max_2x2_doubled(x_flat[start:], x_flat[start + w :], n, values, where)
        for r in range(r0, r1):
            _copy_into(values[2 * (r - r0) * w_out :], y_flat[r * w_out :], w_out)


@_serial_below_large(0)
@parallel_kernel
def max_pool2d_2x2_forward(x, y, positions, blocks):
    """Max-pool ``x`` over 2x2 windows with stride 2 and no padding.

    Parameters
    ----------
    x : numpy.ndarray, shape (planes, h, w)
        Input planes; ``h`` and ``w`` even.
    y : numpy.ndarray, shape (planes, h // 2, w // 2)
        Output maxima, same dtype as ``x``.
    positions : numpy.ndarray of uint8, shape (planes * (h // 2), 2, w // 2)
        Output, in the doubled layout: ``positions[r, 0, ow]`` is ``2 * i + j``
        for the maximum at row ``i``, column ``j`` of window ``ow`` of output
        row ``r``; ``positions[r, 1]`` is scratch.
    blocks : int
        Number of blocks the output rows are split into, one ``prange``
        iteration each (the thread count is a good choice); results do not
        depend on it.

    Notes
    -----
    Ties go to the first maximum in row-major order; a window holding NaN gives
    NaN, with the position of its last NaN (as :func:`max_pool2d_forward`).
    """
    rows = y.shape[0] * y.shape[1]
    chunk_rows, chunks, blocks = _chunk_blocks(rows, y.shape[2], blocks)
    # Each iteration owns the output rows of one block of chunks of y and
    # positions.
    for block in prange(blocks):
        first, stop = _block(block, blocks, chunks)
        _max_2x2_chunks(x, y, positions, chunk_rows, first, stop)


@serial_kernel
def _max_2x2_backward_chunks(
    grad_output, positions, grad_input, chunk_rows, first, stop
):
    """Max-pool backward for the output rows of chunks ``first <= c < stop``."""
    rows = grad_output.shape[0] * grad_output.shape[1]
    w_out = grad_output.shape[2]
    w = 2 * w_out
    grad_flat = grad_output.reshape(grad_output.size)
    positions_flat = positions.reshape(positions.size)
    grad_input_flat = grad_input.reshape(grad_input.size)
    for c in range(first, stop):
        r0 = c * chunk_rows
        r1 = min(r0 + chunk_rows, rows)
        _zero(grad_input_flat[2 * r0 * w : 2 * r1 * w], 0, 2 * (r1 - r0) * w)
        for r in range(r0, r1):
            grad = grad_flat[r * w_out :]
            spots = positions_flat[2 * r * w_out :]
            rows_below = grad_input_flat[2 * r * w :]
            for ow in range(w_out):
                spot = spots[ow]
                rows_below[(spot >> 1) * w + 2 * ow + (spot & 1)] = grad[ow]


@_serial_below_large(2)
@parallel_kernel
def max_pool2d_2x2_backward(grad_output, positions, grad_input, blocks):
    """Route each output gradient to the maximum of its 2x2 window.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (planes, h_out, w_out)
        Gradient with respect to the pooled output.
    positions : numpy.ndarray of uint8, shape (planes * h_out, 2, w_out)
        Window positions written by :func:`max_pool2d_2x2_forward`.
    grad_input : numpy.ndarray, shape (planes, 2 * h_out, 2 * w_out)
        Output, overwritten: each output's gradient at its maximum, zero
        elsewhere.
    blocks : int
        Number of blocks the output rows are split into, one ``prange``
        iteration each; results do not depend on it.
    """
    rows = grad_output.shape[0] * grad_output.shape[1]
    chunk_rows, chunks, blocks = _chunk_blocks(rows, grad_output.shape[2], blocks)
    # Each iteration owns the input rows under one block of chunks of output rows.
    for block in prange(blocks):
        first, stop = _block(block, blocks, chunks)
        _max_2x2_backward_chunks(
            grad_output, positions, grad_input, chunk_rows, first, stop
        )


@serial_kernel
def _avg_2x2_doubled(top, bottom, n, out):
    """Window means of doubled entries ``k < n`` (see :func:`_max_2x2_doubled`)."""
    quarter = out.dtype.type(0.25)
    for k in range(n):
        upper = top[2 * k] + top[2 * k + 1]
        lower = bottom[2 * k] + bottom[2 * k + 1]
        out[k] = (upper + lower) * quarter


@serial_kernel
def _avg_2x2_chunks(x, y, chunk_rows, first, stop):
    """Average-pool the output rows of chunks ``first <= c < stop``."""
    rows = y.shape[0] * y.shape[1]
    w_out = y.shape[2]
    w = 2 * w_out
    x_flat = x.reshape(x.size)
    y_flat = y.reshape(y.size)
    means = np.empty(2 * chunk_rows * w_out, x.dtype)
    for c in range(first, stop):
        r0 = c * chunk_rows
        r1 = min(r0 + chunk_rows, rows)
        start = 4 * r0 * w_out
        n = (2 * (r1 - r0) - 1) * w_out
        _avg_2x2_doubled(x_flat[start:], x_flat[start + w :], n, means)
        for r in range(r0, r1):
            _copy_into(means[2 * (r - r0) * w_out :], y_flat[r * w_out :], w_out)


@_serial_below_large(0)
@parallel_kernel
def avg_pool2d_2x2_forward(x, y, blocks):
    """Average-pool ``x`` over 2x2 windows with stride 2 and no padding.

    Parameters
    ----------
    x : numpy.ndarray, shape (planes, h, w)
        Input planes; ``h`` and ``w`` even.
    y : numpy.ndarray, shape (planes, h // 2, w // 2)
        Output means, same dtype as ``x``: the two row sums added, times 1/4.
    blocks : int
        Number of blocks the output rows are split into, one ``prange``
        iteration each; results do not depend on it.
    """
    rows = y.shape[0] * y.shape[1]
    chunk_rows, chunks, blocks = _chunk_blocks(rows, y.shape[2], blocks)
    # Each iteration owns the output rows of one block of chunks of y.
    for block in prange(blocks):
        first, stop = _block(block, blocks, chunks)
        _avg_2x2_chunks(x, y, chunk_rows, first, stop)


@serial_kernel
def _avg_2x2_spread(grad, n, out):
    """``out[2k] = out[2k + 1] = grad[k]`` for ``k < n``."""
    for k in range(n):
        g = grad[k]
        out[2 * k] = g
        out[2 * k + 1] = g


@serial_kernel
def _avg_2x2_backward_chunks(grad_output, grad_input, chunk_rows, first, stop):
    """Average-pool backward for the output rows of chunks ``first <= c < stop``."""
    rows = grad_output.shape[0] * grad_output.shape[1]
    w_out = grad_output.shape[2]
    quarter = grad_input.dtype.type(0.25)
    grad_flat = grad_output.reshape(grad_output.size)
    grad_input_flat = grad_input.reshape(grad_input.size)
    grad = np.empty(2 * chunk_rows * w_out, grad_input.dtype)
    for c in range(first, stop):
        r0 = c * chunk_rows
        r1 = min(r0 + chunk_rows, rows)
        for r in range(r0, r1):
            src = grad_flat[r * w_out :]
            upper = grad[2 * (r - r0) * w_out :]
            lower = grad[(2 * (r - r0) + 1) * w_out :]
            for ow in range(w_out):
                g = src[ow] * quarter
                upper[ow] = g
                lower[ow] = g
        n = 2 * (r1 - r0) * w_out
        _avg_2x2_spread(grad, n, grad_input_flat[4 * r0 * w_out :])


@_serial_below_large(1)
@parallel_kernel
def avg_pool2d_2x2_backward(grad_output, grad_input, blocks):
    """Spread a quarter of each output gradient over its 2x2 window.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (planes, h_out, w_out)
        Gradient with respect to the pooled output.
    grad_input : numpy.ndarray, shape (planes, 2 * h_out, 2 * w_out)
        Output, overwritten.
    blocks : int
        Number of blocks the output rows are split into, one ``prange``
        iteration each; results do not depend on it.
    """
    rows = grad_output.shape[0] * grad_output.shape[1]
    chunk_rows, chunks, blocks = _chunk_blocks(rows, grad_output.shape[2], blocks)
    # Each iteration owns the input rows under one block of chunks of output rows.
    for block in prange(blocks):
        first, stop = _block(block, blocks, chunks)
        _avg_2x2_backward_chunks(grad_output, grad_input, chunk_rows, first, stop)
