"""The chapter's own training loop (D2L §12.11, PyTorch tab), re-implemented faithfully for
timing: torchvision's FashionMNIST with ToTensor, a DataLoader with 4 workers and batch 256
(shuffled), a host sync every step (its metric accumulator calls float()), and the test set
evaluated each epoch through another DataLoader."""

from __future__ import annotations

import gzip
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from lrsweep.train import data
from lrsweep.train.model import lenet

CHAPTER_LR = 0.3  # the chapter's constant-rate run
BATCH = 256


def chapter_loop(folder: Path, device: torch.device, subset: int, epochs: int) -> list[float]:
    """Seconds per epoch of the chapter's `train` (PyTorch tab), constant rate 0.3."""
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    with tempfile.TemporaryDirectory() as root:
        _unpack(folder, Path(root) / "FashionMNIST" / "raw")
        trans = transforms.ToTensor()
        train_set = torchvision.datasets.FashionMNIST(root, train=True, transform=trans)
        test_set = torchvision.datasets.FashionMNIST(root, train=False, transform=trans)
        if subset:
            train_set = Subset(train_set, range(subset))
        # The chapter's 4 workers, even where torch advises fewer (on 2 cores it warns).
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        train_iter = DataLoader(train_set, BATCH, shuffle=True, num_workers=4)
        test_iter = DataLoader(test_set, BATCH, shuffle=False, num_workers=4)
        net = lenet(0).to(device)
        loss = nn.CrossEntropyLoss()
        trainer = torch.optim.SGD(net.parameters(), lr=CHAPTER_LR)
        seconds = []
        for _ in range(epochs):
            start = time.perf_counter()
            metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3): float() of each term, every step
            net.train()
            for X, y in train_iter:
                trainer.zero_grad()
                X, y = X.to(device), y.to(device)
                y_hat = net(X)
                l = loss(y_hat, y)
                l.backward()
                trainer.step()
                with torch.no_grad():
                    metric[0] += float(l * X.shape[0])
                    metric[1] += float((y_hat.argmax(axis=1) == y).sum())
                    metric[2] += X.shape[0]
            net.eval()  # d2l.evaluate_accuracy_gpu
            correct = total = 0.0
            with torch.no_grad():
                for X, y in test_iter:
                    X, y = X.to(device), y.to(device)
                    correct += float((net(X).argmax(axis=1) == y).sum())
                    total += y.numel()
            seconds.append(time.perf_counter() - start)
        return seconds


def _unpack(folder: Path, raw: Path) -> None:
    """The four IDX files, unpacked into torchvision's layout (it wants them so)."""
    raw.mkdir(parents=True)
    for name in data.FILES.values():
        src = folder / f"{name}.gz"
        (raw / name).write_bytes(gzip.decompress(src.read_bytes()) if src.is_file()
                                 else (folder / name).read_bytes())
