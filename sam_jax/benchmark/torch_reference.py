"""The PyTorch side of the benchmark: the WideResNet and the two-step SAM users run.

`SAM` follows the widely used PyTorch wrapper (github.com/davda54/sam, MIT):
`first_step` saves w and moves to w + rho * g / ||g||, `second_step` restores w
and steps the base optimizer (torch.optim.SGD) with the gradient taken there.
Between the passes BatchNorm momentum is set to 0, as that repository's
`disable_running_stats` does, so the second pass leaves the running statistics
as the first pass set them (the semantics of sam_jax's step).

`WideResnet` is sam_jax.models.wide_resnet in torch: pre-activation blocks,
parameter-free shortcuts (average pool + zero channel padding), the same
shapes and parameter count, so both sides do the same arithmetic.
"""

import torch
import torch.nn.functional as F
from torch import nn

# sam_jax.models.layers: flax momentum 0.9 keeps 0.9 of the old statistics,
# which is torch's momentum 0.1.
BATCHNORM_MOMENTUM = 0.1
BATCHNORM_EPSILON = 1e-5


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(channels, eps=BATCHNORM_EPSILON, momentum=BATCHNORM_MOMENTUM),
        nn.ReLU())


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class WideResnetBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int,
                 activate_before_residual: bool):
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.init_bn = _bn_relu(in_channels)
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn_2 = _bn_relu(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.stride = stride
        self.extra_channels = channels - in_channels

    def forward(self, x):
        if self.activate_before_residual:
            x = self.init_bn(x)
            block_x = x
        else:
            block_x = self.init_bn(x)
        block_x = self.conv2(self.bn_2(self.conv1(block_x)))
        if self.extra_channels:
            x = F.avg_pool2d(x, self.stride) if self.stride > 1 else x
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return block_x + x


class WideResnet(nn.Module):
    """WRN-depth-width; depth = 6 * blocks_per_group + 4."""

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResnet depth={depth} must be 6n+4")
        blocks_per_group = (depth - 4) // 6
        self.init_conv = _conv3x3(in_channels, 16)
        blocks = []
        in_channels = 16
        for group, (channels, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            for i in range(blocks_per_group):
                blocks.append(WideResnetBlock(
                    in_channels, channels * width, stride if i == 0 else 1,
                    activate_before_residual=(group == 0 and i == 0)))
                in_channels = channels * width
        self.blocks = nn.Sequential(*blocks)
        self.pre_pool_bn = _bn_relu(in_channels)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.pre_pool_bn(self.blocks(self.init_conv(x)))
        return self.head(x.mean(dim=(2, 3)))


class SAM(torch.optim.Optimizer):
    """davda54/sam's SAM (non-adaptive): a wrapper around a base optimizer."""

    def __init__(self, params, base_optimizer, rho: float = 0.05, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False):
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["old_p"] = p.data.clone()
                p.add_(p.grad * scale.to(p))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.data = self.state[p]["old_p"]
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def _grad_norm(self):
        return torch.norm(torch.stack([
            p.grad.norm(p=2) for group in self.param_groups
            for p in group["params"] if p.grad is not None]), p=2)


def _set_batchnorm_momentum(model: nn.Module, momentum: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def sam_train_step(model: nn.Module, optimizer: SAM, images, labels) -> torch.Tensor:
    """One SAM step as in davda54/sam's README; returns the first pass's loss.

    Weight decay is torch.optim.SGD's (that README's way), not a loss term.
    """
    _set_batchnorm_momentum(model, BATCHNORM_MOMENTUM)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.first_step(zero_grad=True)
    _set_batchnorm_momentum(model, 0.0)  # running statistics frozen
    F.cross_entropy(model(images), labels).backward()
    optimizer.second_step(zero_grad=True)
    return loss.detach()


def make_sam_optimizer(model: nn.Module, *, rho: float, learning_rate: float,
                       momentum: float, nesterov: bool, weight_decay: float) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=learning_rate,
               momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def sgd_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images,
                   labels) -> torch.Tensor:
    """One step of the base optimizer alone."""
    _set_batchnorm_momentum(model, BATCHNORM_MOMENTUM)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def grouped_sam_train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                           images, labels, *, rho: float,
                           examples_per_perturbation: int) -> torch.Tensor:
    """SAM with one perturbation per group of m examples (m-sharpness), as a
    PyTorch user writes it on one device: for each group, its gradient, the
    ascent to w + rho g / ||g||, the gradient there, and back; the base
    optimizer then steps with the mean of the groups' SAM gradients. Each
    group's first pass updates the BatchNorm running statistics, its second
    does not. Returns the mean first-pass loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = images.shape[0] // examples_per_perturbation
    sam_grads = [torch.zeros_like(p) for p in params]
    losses = []
    for x, y in zip(images.split(examples_per_perturbation),
                    labels.split(examples_per_perturbation)):
        _set_batchnorm_momentum(model, BATCHNORM_MOMENTUM)
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            norm = torch.norm(torch.stack([g.norm(p=2) for g in grads]), p=2)
            ascent = [g * (rho / (norm + 1e-12)) for g in grads]
            saved = [p.detach().clone() for p in params]
            for p, e in zip(params, ascent):
                p.add_(e)
        _set_batchnorm_momentum(model, 0.0)
        perturbed = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        with torch.no_grad():
            for p, w, total, g in zip(params, saved, sam_grads, perturbed):
                p.copy_(w)
                total.add_(g, alpha=1.0 / groups)
        losses.append(loss.detach())
    for p, g in zip(params, sam_grads):
        p.grad = g
    optimizer.step()
    optimizer.zero_grad()
    return torch.stack(losses).mean()
