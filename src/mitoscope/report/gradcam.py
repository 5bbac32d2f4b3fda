"""Grad-CAM (Selvaraju et al.) for candidate classifiers, as used by Farooq et al.

The class-activation map of a convolutional layer is the ReLU of its feature maps weighted by
the spatially averaged gradients of the chosen output (the mitotic-figure logit); it is
upsampled to the input size and scaled to ``[0, 1]`` per image. Works on CPU and CUDA: hooks
are registered on the layer for one forward/backward pass and removed afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def gradcam(
    model: Any,
    layer: Any,
    images: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    head: str = "mf",
) -> np.ndarray:
    """Grad-CAM heatmaps of ``images`` for one model.

    Parameters
    ----------
    model : torch.nn.Module
        Takes RGB in ``[0, 1]`` ``(N, 3, H, W)`` (and, when ``model.use_mask``, a mask
        ``(N, 1, H, W)``); returns a dict of logits (``head`` selects one) or a tensor.
    layer : torch.nn.Module
        The convolutional layer to explain (usually the last block, e.g.
        ``classifier.gradcam_layer(model)``).
    images : uint8 array (N, H, W, 3)
    masks : bool array (N, H, W), optional
        Candidate masks for models with a mask branch.
    head : str
        Output explained (``"mf"`` or ``"atypical"``).

    Returns
    -------
    float32 array (N, H, W) in ``[0, 1]``.

    Examples
    --------
    >>> from mitoscope.classify.registry import create_model  # doctest: +SKIP
    >>> net = create_model("tiny_cnn")  # doctest: +SKIP
    >>> gradcam(net, net.cam_layer, np.zeros((2, 32, 32, 3), np.uint8)).shape  # doctest: +SKIP
    (2, 32, 32)
    """
    import torch
    from torch.nn import functional as F

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    n, h, w = images.shape[:3]
    if n == 0:
        return np.zeros((0, h, w), dtype=np.float32)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div(255.0).requires_grad_(True)
    m = None
    if masks is not None and getattr(model, "use_mask", False):
        m = torch.from_numpy(np.asarray(masks, dtype=np.float32)[:, None]).to(device)

    store: dict[str, Any] = {}

    def _forward_hook(_mod: Any, _inp: Any, out: Any) -> None:
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    was_training = model.training
    model.eval()
    # only activation gradients are needed: skip the weight gradients (most of the backward)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    handle = layer.register_forward_hook(_forward_hook)
    try:
        with torch.enable_grad():
            out = model(x, m) if m is not None else model(x)
            logit = _select(out, head)
            model.zero_grad(set_to_none=True)
            logit.sum().backward()
        act = store["act"].detach()
        grad = store["grad"].detach()
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        cam = cam.cpu().numpy().astype(np.float32)
    finally:
        handle.remove()
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    peak = cam.reshape(n, -1).max(axis=1)
    cam /= np.where(peak > 0, peak, 1.0)[:, None, None]
    return cam


def _select(out: Any, head: str) -> Any:
    if isinstance(out, dict):
        if head not in out:
            raise ValueError(f"model has no output {head!r} (outputs: {', '.join(out)})")
        t = out[head]
    else:
        t = out
    if t.ndim == 2 and t.shape[1] == 2:
        return t[:, 1] - t[:, 0]
    return t.reshape(t.shape[0], -1)[:, 0]


def spatial_layer(model: Any, layer: Any, size_px: int, *, min_cells: int = 4) -> Any:
    """``layer`` if its output map has at least ``min_cells`` per side, else a finer one.

    A 64 px patch through a stride-32 network leaves a 2 x 2 map at the last block: its
    Grad-CAM is a blur. Then the last module (in forward order) whose 4-D output still has
    ``min_cells`` cells per side is explained instead (e.g. the stride-16 stage).
    """
    import torch

    order: list[tuple[Any, tuple[int, ...]]] = []

    def hook(mod: Any, _inp: Any, out: Any) -> None:
        if torch.is_tensor(out) and out.ndim == 4:
            order.append((mod, tuple(out.shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros((1, 3, size_px, size_px), device=device)
        with torch.no_grad():
            if getattr(model, "use_mask", False):
                model(x, torch.zeros((1, 1, size_px, size_px), device=device))
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    shape = next((s for m, s in order if m is layer), None)
    if shape is None or min(shape[2:]) >= min_cells:
        return layer
    from torch import nn

    pads = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
    finer = [
        m
        for m, s in order
        if min(s[2:]) >= min_cells
        and s[1] >= 8
        and size_px % s[2] == 0  # a feature map aligned with the input (not a padded one)
        and not isinstance(m, pads)
    ]
    return finer[-1] if finer else layer


def ensemble_gradcam(
    models: list[Any],
    layers: list[Any],
    images: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    head: str = "mf",
) -> np.ndarray:
    """Mean Grad-CAM over the members of an ensemble (each scaled to [0, 1] first)."""
    cams = [
        gradcam(m, lay, images, masks, head=head) for m, lay in zip(models, layers, strict=True)
    ]
    cam = np.mean(cams, axis=0)
    peak = cam.reshape(len(cam), -1).max(axis=1) if len(cam) else np.zeros(0)
    return (cam / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)
