"""ResNet-18 for 1-channel 28x28 chest X-rays, with its 512-d embedding and Grad-CAM layers."""
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

ARCH = "resnet18_small_input"
EMBEDDING_DIM = 512


class PneumoniaResNet18(ResNet):
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, so a 28x28 input keeps
    28 -> 14 -> 7 -> 4 maps through the four stages (ImageNet's stem would leave 1x1 at the end).
    State-dict keys are torchvision's own."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d globally pooled features that feed the classifier (Tasks 2 and 3 use them)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def stage_outputs(self) -> dict:
        """Candidate Grad-CAM layers by name: last block of stage 3 (7x7 at 28 px) and 4 (4x4)."""
        return {"layer3": self.layer3[-1], "layer4": self.layer4[-1]}


def build_model(arch: str = ARCH, in_channels: int = 1, num_classes: int = 2) -> PneumoniaResNet18:
    if arch != ARCH:
        raise ValueError(f"unknown architecture {arch!r}; this code builds {ARCH!r}")
    return PneumoniaResNet18(in_channels=in_channels, num_classes=num_classes)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
