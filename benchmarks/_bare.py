"""A bare PyTorch + smp training loop on a tile folder: the yardstick edgesearch's trainer must match.

Written from the libraries alone, sharing no code with ``edgesearch.trainer``: numpy reads and
normalises the tiles (per image, 1st and 99.8th percentiles to 0..1, as microscopy tools do),
random flips and quarter turns augment them, ``smp.Unet`` learns with ``BCEWithLogitsLoss`` and
Adam at a fixed learning rate, and every epoch the IoU over all validation pixels (threshold 0.5)
is recorded. ``otsu_iou`` is the classical baseline: Otsu's threshold per validation tile (OpenCV).

``bare_train_patches`` is the same loop on whole images of any size: each epoch a given number of
random square patches (the image drawn in proportion to its area, the corner uniform, images
smaller than a patch padded with 0), and validation on each whole image by MONAI's
``sliding_window_inference`` (overlap 0.5, a sigmoid per window).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BareResult", "bare_train", "bare_train_patches", "load_images", "load_split", "otsu_iou"]


@dataclass(frozen=True)
class BareResult:
    best_val_iou: float
    history: list[float]
    """val IoU after each epoch."""


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def _unit(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1.0, 99.8))
    scaled = (image.astype(np.float32) - np.float32(low)) / np.float32(max(float(high - low), 1e-6))
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _resized(array: np.ndarray, size: int | None, *, mask: bool) -> np.ndarray:
    if size is None or array.shape[0] == size:
        return array
    import cv2

    return cv2.resize(array, (size, size), interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_LINEAR)


def load_split(root: Path, split: str, *, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N,1,H,W) in 0..1, masks float32 (N,1,H,W) 0/1) of ``root/split``, resized to ``size``."""
    names = sorted(p.name for p in (root / split / "images").iterdir())
    images = np.stack([_resized(_unit(_read(root / split / "images" / n)), size, mask=False) for n in names])
    masks = np.stack(
        [_resized((_read(root / split / "masks" / n) > 0).astype(np.float32), size, mask=True) for n in names]
    )
    return images[:, None], masks[:, None]


def _augment(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    out_i, out_m = [], []
    for image, mask in zip(images, masks, strict=True):
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k, axes=(1, 2))
        if flip:
            image, mask = image[:, :, ::-1], mask[:, :, ::-1]
        out_i.append(np.ascontiguousarray(image))
        out_m.append(np.ascontiguousarray(mask))
    return np.stack(out_i), np.stack(out_m)


def bare_train(
    root: Path,
    *,
    epochs: int,
    seed: int,
    batch_size: int = 8,
    lr: float = 1.0e-3,
    encoder: str = "resnet18",
    size: int | None = None,
    save_to: Path | None = None,
) -> BareResult:
    """Train and validate every epoch; ``save_to``: ``torch.save`` the best weights there when they improve."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_x, train_y = load_split(root, "train", size=size)
    val_images, val_masks = load_split(root, "val", size=size)
    val_x, val_y = torch.from_numpy(val_images), val_masks > 0.5
    model = smp.Unet(encoder, encoder_weights=None, in_channels=1, classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history = []
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(train_x))
        # Whole batches only: BatchNorm cannot train on a batch of one image.
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            images, masks = _augment(train_x[batch], train_y[batch], rng)
            optimizer.zero_grad()
            loss = loss_fn(model(torch.from_numpy(images)), torch.from_numpy(masks))
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            pred = (model(val_x) >= 0).numpy()
        history.append(float((pred & val_y).sum() / max((pred | val_y).sum(), 1)))
        if save_to is not None and history[-1] == max(history):
            torch.save(model.state_dict(), save_to)
    return BareResult(max(history), history)


def load_images(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image float32 (1,H,W) in 0..1, mask float32 (1,H,W) 0/1) of each file of ``root/split``, native size."""
    names = sorted(p.name for p in (root / split / "images").iterdir())
    return [
        (
            _unit(_read(root / split / "images" / n))[None],
            (_read(root / split / "masks" / n) > 0).astype(np.float32)[None],
        )
        for n in names
    ]


def _padded(array: np.ndarray, patch: int) -> np.ndarray:
    height, width = array.shape[-2:]
    return np.pad(array, ((0, 0), (0, max(patch - height, 0)), (0, max(patch - width, 0))))


def _patches(
    images: list[tuple[np.ndarray, np.ndarray]], n: int, patch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random (image, mask) patches of side ``patch``: (n,1,patch,patch) each."""
    areas = np.array([image.shape[-2] * image.shape[-1] for image, _ in images], dtype=np.float64)
    out_i, out_m = [], []
    for i in rng.choice(len(images), size=n, p=areas / areas.sum()):
        image, mask = images[i]
        top = int(rng.integers(image.shape[-2] - patch + 1))
        left = int(rng.integers(image.shape[-1] - patch + 1))
        out_i.append(image[:, top : top + patch, left : left + patch])
        out_m.append(mask[:, top : top + patch, left : left + patch])
    return np.stack(out_i), np.stack(out_m)


def bare_train_patches(
    root: Path,
    *,
    epochs: int,
    seed: int,
    patch: int,
    patches_per_epoch: int,
    batch_size: int = 8,
    lr: float = 1.0e-3,
    encoder: str = "resnet18",
    save_to: Path | None = None,
) -> BareResult:
    """Train on ``patches_per_epoch`` patches an epoch, validate the whole images every epoch by sliding window."""
    import segmentation_models_pytorch as smp
    import torch
    from monai.inferers import sliding_window_inference

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = [(_padded(image, patch), _padded(mask, patch)) for image, mask in load_images(root, "train")]
    val = load_images(root, "val")
    model = smp.Unet(encoder, encoder_weights=None, in_channels=1, classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history = []
    for _ in range(epochs):
        model.train()
        all_images, all_masks = _patches(train, patches_per_epoch, patch, rng)
        for start in range(0, patches_per_epoch - batch_size + 1, batch_size):
            images, masks = _augment(all_images[start : start + batch_size], all_masks[start : start + batch_size], rng)
            optimizer.zero_grad()
            loss = loss_fn(model(torch.from_numpy(images)), torch.from_numpy(masks))
            loss.backward()
            optimizer.step()
        model.eval()
        inter = union = 0
        with torch.inference_mode():
            for image, mask in val:
                prob = sliding_window_inference(
                    torch.from_numpy(image)[None],
                    roi_size=(patch, patch),
                    sw_batch_size=batch_size,
                    predictor=lambda x: torch.sigmoid(model(x)),
                    overlap=0.5,
                )
                pred, truth = prob[0].numpy() >= 0.5, mask > 0.5
                inter += int((pred & truth).sum())
                union += int((pred | truth).sum())
        history.append(inter / max(union, 1))
        if save_to is not None and history[-1] == max(history):
            torch.save(model.state_dict(), save_to)
    return BareResult(max(history), history)


def otsu_iou(root: Path) -> float:
    """IoU over all validation pixels of Otsu's threshold, taken per tile on its 8-bit rendering."""
    import cv2

    images, masks = load_split(root, "val")
    inter = union = 0
    for image, mask in zip(images[:, 0], masks[:, 0] > 0.5, strict=True):
        _, pred = cv2.threshold((image * 255).astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        pred = pred.astype(bool)
        inter += int((pred & mask).sum())
        union += int((pred | mask).sum())
    return inter / max(union, 1)
