"""The torch side of the data: canvas samples, a resumable sampler, and collate.

Training data is a pure function of (seed, epoch, position): `EpochBatchSampler` owns the
shuffle and the flip decisions in the main process, so workers only render what they are
told, a run restarted mid-epoch sees exactly the batches it had not consumed yet, and
`torchrun` processes take disjoint shards (torch's DistributedSampler semantics).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from runtimes.image import boxes_to_canvas, letterbox

from .data.base import DetectionDataset


class CanvasDataset(torch.utils.data.Dataset):
    """Items of a DetectionDataset letterboxed onto the model's canvas.

    Indexed by (index, flip). Returns the canvas as uint8 CHW (cheap to pass between
    processes; the training step scales it to 0..1 floats), the target in canvas pixels,
    and the letterbox to map detections back to the original image.
    """

    def __init__(self, dataset: DetectionDataset, canvas: tuple[int, int], train: bool):
        self.dataset, self.canvas, self.train = dataset, tuple(canvas), train

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, bool]) -> dict:
        index, flip = item
        before = Counter(self.dataset.skipped)
        s = self.dataset.load(int(index))
        if self.train:
            s = s.without_crowd()  # crowd regions count in evaluation only
        image, boxes, labels = s.image, s.boxes, s.labels
        if flip:
            # flip the original image, not the canvas: the picture must stay top-left
            image = image[:, ::-1]
            w = image.shape[1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        canvas, lb = letterbox(np.ascontiguousarray(image), self.canvas)
        # skips counted inside a worker process would die with it: hand them to the main process
        skipped = Counter(self.dataset.skipped) - before if get_worker_info() is not None else Counter()
        return dict(
            image=torch.from_numpy(canvas).permute(2, 0, 1),
            boxes=torch.from_numpy(boxes_to_canvas(boxes, lb)),
            labels=torch.as_tensor(labels, dtype=torch.int64),
            image_id=int(s.image_id),
            letterbox=lb,
            skipped=skipped,
        )


def collate(items: list[dict]) -> dict:
    """A batch: stacked uint8 canvases plus per-image targets (torchvision's list-of-dicts)."""
    skipped = Counter()
    for it in items:
        skipped.update(it["skipped"])
    return dict(
        images=torch.stack([it["image"] for it in items]),
        targets=[dict(boxes=it["boxes"], labels=it["labels"]) for it in items],
        image_ids=[it["image_id"] for it in items],
        letterboxes=[it["letterbox"] for it in items],
        skipped=skipped,
    )


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) for one epoch of one process, from a given batch on.

    The permutation and the flips come from np.random.default_rng([seed, epoch]). With
    `world_size` > 1 the permutation is padded to a multiple of the world size by
    repeating its head and rank r takes every world_size-th index from r, as torch's
    DistributedSampler does, so every process runs the same number of batches.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 flip: bool = True, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise ValueError("the dataset is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle, self.flip, self.rank, self.world_size = shuffle, flip, rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(math.ceil(self.size / self.world_size) / self.batch_size)

    def epoch_items(self, epoch: int) -> list[tuple[int, bool]]:
        """This process's (index, flip) items of `epoch`, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        flips = rng.random(self.size) < 0.5 if self.flip else np.zeros(self.size, bool)
        total = math.ceil(self.size / self.world_size) * self.world_size
        order = np.resize(order, total)  # pads by repeating from the start
        mine = order[self.rank::self.world_size]
        return [(int(i), bool(flips[i])) for i in mine]

    def __iter__(self):
        items = self.epoch_items(self.epoch)
        for b in range(self.start_batch, self.batches_per_epoch):
            yield items[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


def make_loader(dataset: DetectionDataset, canvas: tuple[int, int], sampler: EpochBatchSampler,
                train: bool, workers: int = 0) -> DataLoader:
    return DataLoader(
        CanvasDataset(dataset, canvas, train),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        # a private generator: creating an iterator must not draw from the global torch RNG,
        # or a run resumed mid-epoch would see different random numbers than the original
        generator=torch.Generator(),
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )


def canvas_to_float(images: torch.Tensor, device: torch.device | str) -> list[torch.Tensor]:
    """uint8 [B, 3, H, W] canvases -> list of float 0..1 CHW tensors on `device` (the model's input)."""
    images = images.to(device, non_blocking=True).float().div_(255)
    return list(images.unbind(0))


__all__ = ["CanvasDataset", "EpochBatchSampler", "canvas_to_float", "collate", "make_loader"]
