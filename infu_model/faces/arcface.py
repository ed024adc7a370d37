"""IR-SE50 ArcFace in plain torch, laid out so facexlib's published ``arcface``
weights (``recognition_arcface_ir_se50.pth``) load key for key with
``strict=True`` — without importing facexlib, which drags in torchvision.

The architecture is the TreB1eN InsightFace_Pytorch backbone that facexlib
ships: ``input_layer`` (conv-bn-prelu), ``body`` (3/4/14/3 bottleneck-IR-SE units
of depth 64/128/256/512, each first unit striding by 2), ``output_layer``
(bn, dropout, flatten, linear 512*7*7 -> 512, bn1d), L2-normalised output.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))  # in, depth, units (num_layers=50)


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth, 16))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """Input: Bx3x112x112 RGB in [-1, 1]. Output: Bx512, unit length."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for cin, depth, n in _STAGES:
            units.append(BottleneckIRSE(cin, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.output_layer(self.body(self.input_layer(x)))
        return nn.functional.normalize(x, dim=1)


def load_arcface(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> IRSE50:
    """facexlib's ``recognition_arcface_ir_se50.pth`` (a plain state dict), strictly."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ArcFace weights not found: {path} (facexlib's recognition_arcface_ir_se50.pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = IRSE50()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device=device, dtype=dtype)
