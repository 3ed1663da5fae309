"""Numba kernels behind :mod:`fastcnn.tutorial`: per-layer steps and whole epochs.

Every array argument is a flat, C-contiguous float64 buffer addressed through an
offset, so the same kernel serves a layer's own arrays (offset 0) and the packed
buffers of a compiled network, where several operands share one buffer. A layer's
parameters are updated in place, and the input gradient is always computed from
the parameters as they were before that update.

The network program
    :func:`train_epochs` interprets a network as an int64 table with one row per
    layer (the columns are named by the ``COL_*`` constants): the layer's type
    code, the offsets of its input and output in the activation buffer, the
    offsets of its weights and biases in the parameter buffer, and up to five
    sizes. The gradient buffer is laid out like the activation buffer, so the
    gradient of any activation lives at the same offset. All kernels are serial:
    one sample's pass through the layers is a chain of dependent steps.

Constants
    The layer codes, loss codes and ``COL_*`` columns below are compiled into the
    kernels as constants (a cached kernel is recompiled when this file changes);
    :mod:`fastcnn.tutorial.network` builds programs from the same names.
"""

from __future__ import annotations

import math

import numpy as np

from fastcnn._config import serial_kernel

# Layer type codes.
DENSE = 0
CONVOLUTIONAL = 1
RESHAPE = 2
TANH = 3
SIGMOID = 4
SOFTMAX = 5

# Loss codes, for the loss value and for its gradient separately.
MSE = 0
BINARY_CROSS_ENTROPY = 1

# Columns of the network program.
COL_CODE = 0
COL_IN = 1
COL_OUT = 2
COL_WEIGHTS = 3
COL_BIASES = 4
COL_SIZES = 5
PROGRAM_COLUMNS = 10


# --- layer steps ---------------------------------------------------------------


@serial_kernel
def dense_forward(w, w_off, b, b_off, x, x_off, out, out_off, n_out, n_in):
    """Write ``weights @ x + bias`` for one column ``x``.

    Parameters
    ----------
    w : numpy.ndarray, shape (>= w_off + n_out * n_in,)
        Weights, row-major (n_out, n_in), from ``w_off``.
    w_off : int
    b : numpy.ndarray, shape (>= b_off + n_out,)
        Bias, from ``b_off``.
    b_off : int
    x : numpy.ndarray, shape (>= x_off + n_in,)
        Input column, from ``x_off``.
    x_off : int
    out : numpy.ndarray, shape (>= out_off + n_out,)
        Output column, written from ``out_off``.
    out_off : int
    n_out, n_in : int
        Output and input sizes.

    Notes
    -----
    Rows are taken four at a time so that each element of ``x`` is loaded once
    per four rows; the weights stream through the cache once.
    """
    xs = x[x_off : x_off + n_in]
    o = 0
    while o + 4 <= n_out:
        r0 = w[w_off + o * n_in : w_off + (o + 1) * n_in]
        r1 = w[w_off + (o + 1) * n_in : w_off + (o + 2) * n_in]
        r2 = w[w_off + (o + 2) * n_in : w_off + (o + 3) * n_in]
        r3 = w[w_off + (o + 3) * n_in : w_off + (o + 4) * n_in]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for i in range(n_in):
            xi = xs[i]
            a0 += r0[i] * xi
            a1 += r1[i] * xi
            a2 += r2[i] * xi
            a3 += r3[i] * xi
        out[out_off + o] = a0 + b[b_off + o]
        out[out_off + o + 1] = a1 + b[b_off + o + 1]
        out[out_off + o + 2] = a2 + b[b_off + o + 2]
        out[out_off + o + 3] = a3 + b[b_off + o + 3]
        o += 4
    while o < n_out:
        row = w[w_off + o * n_in : w_off + (o + 1) * n_in]
        acc = 0.0
        for i in range(n_in):
            acc += row[i] * xs[i]
        out[out_off + o] = acc + b[b_off + o]
        o += 1


@serial_kernel
def dense_backward(
    w, w_off, b, b_off, x, x_off, g, g_off, grad_in, gi_off, lr, n_out, n_in
):
    """Back-propagate through ``weights @ x + bias`` and take one SGD step.

    Writes ``grad_in = weights.T @ g`` with the weights before the step, then
    ``weights -= lr * g @ x.T`` and ``bias -= lr * g``.

    Parameters
    ----------
    w, w_off, b, b_off, x, x_off : numpy.ndarray and int
        As for :func:`dense_forward`; ``x`` is the input of the forward pass.
    g : numpy.ndarray, shape (>= g_off + n_out,)
        Gradient of the loss with respect to the output, from ``g_off``.
    g_off : int
    grad_in : numpy.ndarray, shape (>= gi_off + n_in,)
        Gradient with respect to the input, written from ``gi_off``.
    gi_off : int
    lr : float
        Learning rate.
    n_out, n_in : int
        Output and input sizes.

    Notes
    -----
    One pass over the weights does both, four rows at a time: each weight is
    read once, used for ``grad_in`` and then overwritten by its updated value.
    """
    xs = x[x_off : x_off + n_in]
    gi = grad_in[gi_off : gi_off + n_in]
    gi[:] = 0.0
    o = 0
    while o + 4 <= n_out:
        r0 = w[w_off + o * n_in : w_off + (o + 1) * n_in]
        r1 = w[w_off + (o + 1) * n_in : w_off + (o + 2) * n_in]
        r2 = w[w_off + (o + 2) * n_in : w_off + (o + 3) * n_in]
        r3 = w[w_off + (o + 3) * n_in : w_off + (o + 4) * n_in]
        g0 = g[g_off + o]
        g1 = g[g_off + o + 1]
        g2 = g[g_off + o + 2]
        g3 = g[g_off + o + 3]
        for i in range(n_in):
            xi = xs[i]
            w0 = r0[i]
            w1 = r1[i]
            w2 = r2[i]
            w3 = r3[i]
            gi[i] += w0 * g0 + w1 * g1 + w2 * g2 + w3 * g3
            r0[i] = w0 - lr * (g0 * xi)
            r1[i] = w1 - lr * (g1 * xi)
            r2[i] = w2 - lr * (g2 * xi)
            r3[i] = w3 - lr * (g3 * xi)
        o += 4
    while o < n_out:
        row = w[w_off + o * n_in : w_off + (o + 1) * n_in]
        go = g[g_off + o]
        for i in range(n_in):
            wi = row[i]
            gi[i] += wi * go
            row[i] = wi - lr * (go * xs[i])
        o += 1
    for o in range(n_out):
        b[b_off + o] -= lr * g[g_off + o]


@serial_kernel
def conv_forward(x, x_off, k, k_off, b, b_off, out, out_off, depth, c, h, w, ks):
    """Write ``out[i] = biases[i] + sum_j valid_cross_correlation(x[j], k[i, j])``.

    Parameters
    ----------
    x : numpy.ndarray, shape (>= x_off + c * h * w,)
        Input, row-major (c, h, w), from ``x_off``.
    x_off : int
    k : numpy.ndarray, shape (>= k_off + depth * c * ks * ks,)
        Kernels, row-major (depth, c, ks, ks), from ``k_off``.
    k_off : int
    b : numpy.ndarray, shape (>= b_off + depth * h_out * w_out,)
        Biases, one per output element, from ``b_off``.
    b_off : int
    out : numpy.ndarray, shape (>= out_off + depth * h_out * w_out,)
        Output, row-major (depth, h_out, w_out), written from ``out_off``.
    out_off : int
    depth, c, h, w, ks : int
        Output channels, input channels, input height and width, kernel size.

    Notes
    -----
    ``h_out = h - ks + 1`` and ``w_out = w - ks + 1`` (no padding, stride 1).

    Each kernel tap is one long loop over the "wide" output plane, whose rows
    are ``w`` long like the input's: position ``y * w + q`` of that plane reads
    input position ``y * w + q + r * w + s``. Columns ``q >= w_out`` of the wide
    plane are never copied out.
    """
    h_out = h - ks + 1
    w_out = w - ks + 1
    plane = h_out * w_out
    span = (h_out - 1) * w + w_out
    wide = np.empty(span)
    for i in range(depth):
        wide[:] = 0.0
        for j in range(c):
            for r in range(ks):
                for s in range(ks):
                    kv = k[k_off + ((i * c + j) * ks + r) * ks + s]
                    start = x_off + (j * h + r) * w + s
                    xs = x[start : start + span]
                    for p in range(span):
                        wide[p] += kv * xs[p]
        base = out_off + i * plane
        bias = b_off + i * plane
        for y in range(h_out):
            out_row = out[base + y * w_out : base + (y + 1) * w_out]
            bias_row = b[bias + y * w_out : bias + (y + 1) * w_out]
            wide_row = wide[y * w : y * w + w_out]
            for q in range(w_out):
                out_row[q] = bias_row[q] + wide_row[q]


@serial_kernel
def conv_backward(
    x,
    x_off,
    k,
    k_off,
    b,
    b_off,
    g,
    g_off,
    grad_in,
    gi_off,
    lr,
    need_grad_in,
    depth,
    c,
    h,
    w,
    ks,
):
    """Back-propagate through :func:`conv_forward` and take one SGD step.

    Writes ``grad_in[j] = sum_i full_convolution(g[i], k[i, j])`` with the
    kernels before the step (when ``need_grad_in``), then ``k[i, j] -= lr *
    valid_cross_correlation(x[j], g[i])`` and ``b -= lr * g``.

    Parameters
    ----------
    x, x_off, k, k_off, b, b_off : numpy.ndarray and int
        As for :func:`conv_forward`; ``x`` is the input of the forward pass.
    g : numpy.ndarray, shape (>= g_off + depth * h_out * w_out,)
        Gradient with respect to the output, row-major (depth, h_out, w_out).
    g_off : int
    grad_in : numpy.ndarray, shape (>= gi_off + c * h * w,)
        Gradient with respect to the input, written from ``gi_off``.
    gi_off : int
    lr : float
        Learning rate.
    need_grad_in : bool
        Whether ``grad_in`` is wanted (the first layer of a network needs none).
    depth, c, h, w, ks : int
        As for :func:`conv_forward`.

    Notes
    -----
    ``g[i]`` is spread over a wide plane (rows ``w`` long, zeros in columns
    ``q >= w_out``) as in :func:`conv_forward`; each tap is then one long loop:
    a dot product with the shifted input for the kernel gradient, a scaled add
    into the shifted input gradient.
    """
    h_out = h - ks + 1
    w_out = w - ks + 1
    plane = h_out * w_out
    span = (h_out - 1) * w + w_out
    wide = np.zeros(span)
    if need_grad_in:
        grad_in[gi_off : gi_off + c * h * w] = 0.0
    for i in range(depth):
        for y in range(h_out):
            src = g_off + i * plane + y * w_out
            wide[y * w : y * w + w_out] = g[src : src + w_out]
        for j in range(c):
            for r in range(ks):
                for s in range(ks):
                    at = k_off + ((i * c + j) * ks + r) * ks + s
                    start = (j * h + r) * w + s
                    if need_grad_in:
                        kv = k[at]
                        gis = grad_in[gi_off + start : gi_off + start + span]
                        for p in range(span):
                            gis[p] += kv * wide[p]
                    xs = x[x_off + start : x_off + start + span]
                    acc = 0.0
                    for p in range(span):
                        acc += xs[p] * wide[p]
                    k[at] -= lr * acc
    n_b = depth * plane
    b_all = b[b_off : b_off + n_b]
    g_all = g[g_off : g_off + n_b]
    for p in range(n_b):
        b_all[p] -= lr * g_all[p]


@serial_kernel
def sigmoid_scalar(v):
    """Return ``1 / (1 + exp(-v))`` without overflow for large ``|v|``."""
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@serial_kernel
def softmax_forward(x, x_off, out, out_off, n):
    """Write ``exp(x - max) / sum(exp(x - max))`` over ``n`` elements."""
    peak = x[x_off]
    for i in range(1, n):
        if x[x_off + i] > peak:
            peak = x[x_off + i]
    total = 0.0
    for i in range(n):
        e = math.exp(x[x_off + i] - peak)
        out[out_off + i] = e
        total += e
    for i in range(n):
        out[out_off + i] /= total


@serial_kernel
def softmax_backward(s, s_off, g, g_off, grad_in, gi_off, n):
    """Write the softmax Jacobian-vector product ``s * (g - s . g)``."""
    dot = 0.0
    for i in range(n):
        dot += s[s_off + i] * g[g_off + i]
    for i in range(n):
        grad_in[gi_off + i] = s[s_off + i] * (g[g_off + i] - dot)


# --- whole network -------------------------------------------------------------


@serial_kernel
def forward_layer(row, params, acts):
    """Run the forward pass of one program row on the activation buffer."""
    code = row[COL_CODE]
    src = row[COL_IN]
    dst = row[COL_OUT]
    if code == DENSE:
        dense_forward(
            params,
            row[COL_WEIGHTS],
            params,
            row[COL_BIASES],
            acts,
            src,
            acts,
            dst,
            row[COL_SIZES],
            row[COL_SIZES + 1],
        )
    elif code == CONVOLUTIONAL:
        conv_forward(
            acts,
            src,
            params,
            row[COL_WEIGHTS],
            params,
            row[COL_BIASES],
            acts,
            dst,
            row[COL_SIZES],
            row[COL_SIZES + 1],
            row[COL_SIZES + 2],
            row[COL_SIZES + 3],
            row[COL_SIZES + 4],
        )
    elif code == SOFTMAX:
        softmax_forward(acts, src, acts, dst, row[COL_SIZES])
    else:
        n = row[COL_SIZES]
        x = acts[src : src + n]
        out = acts[dst : dst + n]
        if code == RESHAPE:
            out[:] = x
        elif code == TANH:
            for p in range(n):
                out[p] = math.tanh(x[p])
        else:
            for p in range(n):
                out[p] = sigmoid_scalar(x[p])


@serial_kernel
def backward_layer(row, params, acts, grads, lr, need_grad_in):
    """Run the backward pass and SGD step of one program row.

    Reads the output gradient at the row's output offset of ``grads`` and writes
    the input gradient at its input offset. When ``need_grad_in`` is false (the
    first layer) the layers that can skip computing the input gradient do so.
    Activation derivatives are taken from the stored outputs: ``1 - t ** 2`` for
    tanh, ``s * (1 - s)`` for the sigmoid.
    """
    code = row[COL_CODE]
    src = row[COL_IN]
    dst = row[COL_OUT]
    if code == DENSE:
        dense_backward(
            params,
            row[COL_WEIGHTS],
            params,
            row[COL_BIASES],
            acts,
            src,
            grads,
            dst,
            grads,
            src,
            lr,
            row[COL_SIZES],
            row[COL_SIZES + 1],
        )
    elif code == CONVOLUTIONAL:
        conv_backward(
            acts,
            src,
            params,
            row[COL_WEIGHTS],
            params,
            row[COL_BIASES],
            grads,
            dst,
            grads,
            src,
            lr,
            need_grad_in,
            row[COL_SIZES],
            row[COL_SIZES + 1],
            row[COL_SIZES + 2],
            row[COL_SIZES + 3],
            row[COL_SIZES + 4],
        )
    elif not need_grad_in:
        return
    elif code == SOFTMAX:
        softmax_backward(acts, dst, grads, dst, grads, src, row[COL_SIZES])
    else:
        n = row[COL_SIZES]
        out = acts[dst : dst + n]
        g = grads[dst : dst + n]
        grad_in = grads[src : src + n]
        if code == RESHAPE:
            grad_in[:] = g
        elif code == TANH:
            for p in range(n):
                grad_in[p] = g[p] * (1.0 - out[p] * out[p])
        else:
            for p in range(n):
                grad_in[p] = g[p] * (out[p] * (1.0 - out[p]))


@serial_kernel
def loss_value(code, y, y_row, p, p_off, n):
    """Return the mean loss between target row ``y[y_row]`` and prediction ``p``."""
    total = 0.0
    if code == MSE:
        for i in range(n):
            d = y[y_row, i] - p[p_off + i]
            total += d * d
    else:
        for i in range(n):
            t = y[y_row, i]
            q = p[p_off + i]
            total += -t * math.log(q) - (1.0 - t) * math.log(1.0 - q)
    return total / n


@serial_kernel
def loss_gradient(code, y, y_row, p, p_off, grad, n):
    """Write the gradient of the mean loss with respect to the prediction ``p``."""
    if code == MSE:
        for i in range(n):
            grad[p_off + i] = 2.0 * (p[p_off + i] - y[y_row, i]) / n
    else:
        for i in range(n):
            t = y[y_row, i]
            q = p[p_off + i]
            grad[p_off + i] = ((1.0 - t) / (1.0 - q) - t / q) / n


@serial_kernel
def forward_network(program, params, acts, x, x_row):
    """Forward sample ``x[x_row]`` through every layer of ``program``."""
    start = program[0, COL_IN]
    for p in range(x.shape[1]):
        acts[start + p] = x[x_row, p]
    for layer in range(program.shape[0]):
        forward_layer(program[layer], params, acts)


@serial_kernel
def train_epochs(program, params, acts, grads, x, y, loss_code, grad_code, lr, errors):
    """Train ``errors.shape[0]`` epochs of one-sample-at-a-time SGD.

    Parameters
    ----------
    program : numpy.ndarray of int64, shape (n_layers, PROGRAM_COLUMNS)
        The network program (see the module docstring).
    params : numpy.ndarray, shape (n_params,)
        All parameters, updated in place.
    acts, grads : numpy.ndarray, shape (n_acts,)
        Work buffers for activations and their gradients. After the call they
        hold the last sample's values.
    x : numpy.ndarray, shape (n_samples, in_size)
        Inputs, one flattened sample per row.
    y : numpy.ndarray, shape (n_samples, out_size)
        Targets, one flattened sample per row.
    loss_code, grad_code : int
        Which loss is summed (``MSE`` or ``BINARY_CROSS_ENTROPY``) and which
        loss's gradient is back-propagated.
    lr : float
        Learning rate.
    errors : numpy.ndarray, shape (epochs,)
        Written with each epoch's loss averaged over the samples.
    """
    n_layers = program.shape[0]
    out = program[n_layers - 1, COL_OUT]
    n_out = y.shape[1]
    n_samples = x.shape[0]
    for epoch in range(errors.shape[0]):
        total = 0.0
        for sample in range(n_samples):
            forward_network(program, params, acts, x, sample)
            total += loss_value(loss_code, y, sample, acts, out, n_out)
            loss_gradient(grad_code, y, sample, acts, out, grads, n_out)
            for layer in range(n_layers - 1, -1, -1):
                backward_layer(program[layer], params, acts, grads, lr, layer > 0)
        errors[epoch] = total / n_samples
