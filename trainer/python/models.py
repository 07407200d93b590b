"""PyTorch twins of the trainer's models (same state_dict names and shapes).

Used by the parity test and the benchmark; torchvision provides resnet18/50.
"""
import torch
from torch import nn
import torch.nn.functional as F


class Mlp(nn.Module):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(in_features, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Cnn(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or c_in != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (depth 6n + 2) with projection shortcuts."""

    def __init__(self, n, in_channels=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c_in = 16
        for i, planes in enumerate([16, 32, 64]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WrnBlock(nn.Module):
    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal = c_in == planes
        if not self.equal:
            self.convShortcut = nn.Conv2d(c_in, planes, 1, stride, 0, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equal else self.convShortcut(act))


class WrnStage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layer = nn.Sequential(*blocks)

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, width, in_channels=3, num_classes=10):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        c_in = 16
        for i, planes in enumerate([16 * width, 32 * width, 64 * width]):
            blocks = []
            for j in range(n):
                blocks.append(WrnBlock(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes
            setattr(self, f"block{i + 1}", WrnStage(blocks))
        self.bn1 = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class RefWrnBlock(nn.Module):
    """The sparse-model-soups reference block: biases, dropout 0.3 between
    the convolutions, stride on the second, shortcut from the raw input."""

    def __init__(self, c_in, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, planes, 3, 1, 1, bias=True)
        self.dropout = nn.Dropout(0.3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride, bias=True))

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class RefWideResNet(nn.Module):
    def __init__(self, depth, width, in_channels=3, num_classes=100):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=True)
        c_in = 16
        for i, planes in enumerate([16 * width, 32 * width, 64 * width]):
            blocks = []
            for j in range(n):
                blocks.append(RefWrnBlock(c_in, planes, 2 if i > 0 and j == 0 else 1))
                c_in = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn1 = nn.BatchNorm2d(c_in, momentum=0.9)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn1(x))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(arch, num_classes, input_shape):
    c, h, w = input_shape
    if arch == "mlp":
        return Mlp(c * h * w, num_classes)
    if arch == "cnn":
        return Cnn(c, num_classes)
    if arch == "resnet20":
        return CifarResNet(3, c, num_classes)
    if arch == "resnet56":
        return CifarResNet(9, c, num_classes)
    if arch.startswith("wrn-") and arch.endswith("-ref"):
        _, d, wd, _ = arch.split("-")
        return RefWideResNet(int(d), int(wd), c, num_classes)
    if arch.startswith("wrn-"):
        _, d, wd = arch.split("-")
        return WideResNet(int(d), int(wd), c, num_classes)
    if arch in ("resnet18", "resnet50"):
        import torchvision
        return getattr(torchvision.models, arch)(num_classes=num_classes)
    raise ValueError(f"unknown model {arch}")
