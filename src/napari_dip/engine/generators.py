"""Generator networks f_theta(z): the paper's "skip" encoder-decoder and its variants.

Every generator is described by a small frozen :class:`GeneratorSpec` so a run's record can say
exactly which network produced it, and new families only need a new spec + builder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class GeneratorSpec:
    """Shape of a skip encoder-decoder (Ulyanov et al. 2018, supplementary Fig. 21).

    ``down``/``up``/``skip`` give the channel count per scale, finest first; a skip width of 0
    removes that skip connection (all zeros = the no-skip "hourglass").
    """

    down: tuple[int, ...] = (128, 128, 128, 128, 128)
    up: tuple[int, ...] = (128, 128, 128, 128, 128)
    skip: tuple[int, ...] = (4, 4, 4, 4, 4)
    kernel_down: int = 3
    kernel_up: int = 3
    kernel_skip: int = 1
    upsample: str | tuple[str, ...] = "bilinear"  # or "nearest"; or one of them per scale
    padding: str = "reflection"  # or "zeros"
    norm: bool = True
    conv1x1_up: bool = True
    sigmoid: bool = True

    def __post_init__(self):
        if not (len(self.down) == len(self.up) == len(self.skip)) or not self.down:
            raise ValueError("down, up and skip must have the same, non-zero length")
        lists = ("down", "up", "skip") + (() if isinstance(self.upsample, str) else ("upsample",))
        for name in lists:
            object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON gives lists
        if not isinstance(self.upsample, str):
            if len(self.upsample) != self.depth:
                raise ValueError(f"upsample needs one mode per scale ({self.depth}), "
                                 f"not {len(self.upsample)}")
        for mode in (self.upsample,) if isinstance(self.upsample, str) else self.upsample:
            if mode not in ("bilinear", "nearest"):
                raise ValueError(f"upsample must be 'bilinear' or 'nearest', not {mode!r}")
        if self.padding not in ("reflection", "zeros"):
            raise ValueError(f"padding must be 'reflection' or 'zeros', not {self.padding!r}")

    @property
    def depth(self) -> int:
        return len(self.down)

    def upsample_at(self, level: int) -> str:
        """The upsampling into scale ``level`` (0: the finest)."""
        return self.upsample if isinstance(self.upsample, str) else self.upsample[level]

    def to_dict(self) -> dict:
        return asdict(self)


#: The reference code's default network (2.2 M parameters on a 32-channel input).
PAPER_SKIP = GeneratorSpec()
#: Same depth as the paper's net but narrow at full resolution, where most FLOPs are spent:
#: several times faster on a CPU.
LIGHT_SKIP = GeneratorSpec(
    down=(16, 32, 64, 64, 128), up=(16, 32, 64, 64, 128), skip=(4, 4, 4, 4, 4)
)
#: The light net as denoising uses it. Bilinear upsampling low-passes every scale, so a 256x256
#: fit was still gaining at 2,500 iterations; nearest-neighbour upsampling into the coarser scales
#: passes their detail up at once, while the bilinear step into full resolution keeps the smooth
#: prior where the noise is. Zero padding inside the convolutions saves the padded copies. On
#: 256x256 F16 (sigma 25) it stops at 864 iterations (98 CPU-s) where the all-bilinear net needed
#: 2,602 (383 CPU-s), 0.5 dB lower; on 128x128 fluorescence crops it stops after about half the
#: iterations, 0.2 dB lower on the mean, where all-nearest upsampling lost 0.35 dB.
LIGHT_DENOISE = replace(LIGHT_SKIP, upsample=("bilinear",) + ("nearest",) * 4, padding="zeros")


def hourglass(spec: GeneratorSpec = PAPER_SKIP) -> GeneratorSpec:
    """The same encoder-decoder without skip connections."""
    return replace(spec, skip=(0,) * spec.depth)


class UnitConv2d(nn.Conv2d):
    """A grouped convolution, one group per unit, with the same weights as ``nn.Conv2d``.

    On the CPU, a group whose input and output widths differ (the merges after a skip
    concatenation, the head) runs as one dense convolution per unit: oneDNN's grouped kernels
    took 2-3x the time of the units' dense convolutions for such shapes (light net, 8 units,
    128², one thread), while equal widths ran faster grouped than apart.
    """

    def _conv_forward(self, x, weight, bias):
        g = self.groups
        c_in, c_out = self.in_channels // g, self.out_channels // g
        if g == 1 or c_in == c_out or x.device.type != "cpu" or self.padding_mode != "zeros":
            return super()._conv_forward(x, weight, bias)
        biases = bias.split(c_out) if bias is not None else (None,) * g
        return torch.cat([
            nn.functional.conv2d(xi, wi, bi, self.stride, self.padding, self.dilation)
            for xi, wi, bi in zip(x.split(c_in, 1), weight.split(c_out), biases)
        ], dim=1)


def _conv(c_in: int, c_out: int, k: int, stride: int, padding: str, units: int = 1) -> nn.Module:
    """A convolution of each unit's channels alone (``groups=units``)."""
    pad = (k - 1) // 2
    c_in, c_out = c_in * units, c_out * units
    conv = UnitConv2d if units > 1 else nn.Conv2d
    if pad == 0:
        return conv(c_in, c_out, k, stride=stride, groups=units)
    if padding == "reflection":
        return nn.Sequential(nn.ReflectionPad2d(pad),
                             conv(c_in, c_out, k, stride=stride, groups=units))
    return conv(c_in, c_out, k, stride=stride, padding=pad, groups=units)


def _norm_act(c: int, norm: bool, units: int = 1) -> list[nn.Module]:
    # BatchNorm normalises each channel on its own, so one layer over all units' channels keeps
    # every unit's statistics separate.
    layers: list[nn.Module] = [nn.BatchNorm2d(c * units)] if norm else []
    # In place: neither BatchNorm's nor a convolution's backward needs its output, so the
    # activation can overwrite it (one full-size buffer less per layer, the same numbers).
    return [*layers, nn.LeakyReLU(0.2, inplace=True)]


def _cat_units(a: torch.Tensor, b: torch.Tensor, units: int) -> torch.Tensor:
    """Concatenate channels unit by unit: [a_0, b_0, a_1, b_1, ...], each unit's block whole."""
    if units == 1:
        return torch.cat([a, b], dim=1)
    n, _, h, w = a.shape
    return torch.cat([a.reshape(n, units, -1, h, w), b.reshape(n, units, -1, h, w)],
                     dim=2).reshape(n, -1, h, w)


class _Level(nn.Module):
    """One scale: a skip branch and a strided deeper branch, merged after upsampling."""

    def __init__(self, spec: GeneratorSpec, i: int, c_in: int, units: int = 1):
        super().__init__()
        p, u = spec.padding, units
        self.units = units
        c_down, c_up, c_skip = spec.down[i], spec.up[i], spec.skip[i]
        self.skip = None
        if c_skip:
            self.skip = nn.Sequential(
                _conv(c_in, c_skip, spec.kernel_skip, 1, p, u), *_norm_act(c_skip, spec.norm, u)
            )
        self.down = nn.Sequential(
            _conv(c_in, c_down, spec.kernel_down, 2, p, u),
            *_norm_act(c_down, spec.norm, u),
            _conv(c_down, c_down, spec.kernel_down, 1, p, u),
            *_norm_act(c_down, spec.norm, u),
        )
        self.deeper = _Level(spec, i + 1, c_down, u) if i + 1 < spec.depth else None
        c_deep = spec.up[i + 1] if self.deeper is not None else c_down
        mode = spec.upsample_at(i)
        self.upsample = nn.Upsample(
            scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
        )
        c_cat = c_skip + c_deep
        merge: list[nn.Module] = [nn.BatchNorm2d(c_cat * u)] if spec.norm else []
        merge += [_conv(c_cat, c_up, spec.kernel_up, 1, p, u), *_norm_act(c_up, spec.norm, u)]
        if spec.conv1x1_up:
            merge += [_conv(c_up, c_up, 1, 1, p, u), *_norm_act(c_up, spec.norm, u)]
        self.merge = nn.Sequential(*merge)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = self.upsample(y)
        if self.skip is not None:
            y = _cat_units(self.skip(x), y, self.units)
        return self.merge(y)


class SkipNet(nn.Module):
    """Skip encoder-decoder mapping (N, in_channels, H, W) to (N, out_channels, H, W).

    H and W must be multiples of ``2**depth`` (see :func:`padded_size`): the fit loop pads the
    input and crops the output so callers never see that constraint.

    ``units`` > 1 makes ``units`` independent networks side by side in one module: every layer
    sees unit k's channels at k * width ... (k + 1) * width - 1 and nothing else (grouped
    convolutions, per-channel BatchNorm), so the input is (N, units * in_channels, H, W) and the
    output (N, units * out_channels, H, W). Its state is the units' states concatenated along
    dimension 0 (:func:`stack_states`).
    """

    def __init__(self, spec: GeneratorSpec, in_channels: int, out_channels: int,
                 units: int = 1):
        super().__init__()
        self.spec, self.units = spec, units
        self.body = _Level(spec, 0, in_channels, units)
        head: list[nn.Module] = [_conv(spec.up[0], out_channels, 1, 1, spec.padding, units)]
        if spec.sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


def build_generator(spec, in_channels: int, out_channels: int, units: int = 1) -> nn.Module:
    """The network a spec describes: 2-D (:class:`GeneratorSpec`, ``units`` independent networks
    in one grouped pass) or 3-D (:class:`VolumeSpec`, one network)."""
    if isinstance(spec, VolumeSpec):
        if units != 1:
            raise ValueError("3-D networks are not batched (units must be 1)")
        return SkipNet3d(spec, in_channels, out_channels)
    return SkipNet(spec, in_channels, out_channels, units)


def stack_states(states: list[dict]) -> dict:
    """The state of a ``units=len(states)`` network holding these single networks' states."""
    return {k: v if v.ndim == 0 else torch.cat([s[k] for s in states]) for k, v in
            states[0].items()}


def padded_size(size: int, depth: int) -> int:
    """Smallest side >= ``size`` that the net accepts: a multiple of 2**depth, at least 2x that.

    The deepest feature map must be larger than 1x1 or BatchNorm has a single value per channel.
    """
    step = 2**depth
    return max(-(-size // step) * step, 2 * step)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------- 3-D (volumes)
@dataclass(frozen=True)
class VolumeSpec:
    """A 3-D skip encoder-decoder for z-stacks: ``base``'s widths and depth, with per-level
    strides and kernel sizes along Z chosen from the voxel size (:func:`volume_spec`).

    Y and X are halved at every level, as in 2-D (so the fit loop pads them as for ``base``); Z
    only where its voxels are no coarser than Y/X's and enough planes are left, and a Z kernel of
    1 where neighbouring planes are too far apart to share a filter.
    """

    base: GeneratorSpec
    z_strides: tuple[int, ...]
    z_kernels: tuple[int, ...]

    def __post_init__(self):
        if not len(self.z_strides) == len(self.z_kernels) == self.base.depth:
            raise ValueError("z_strides and z_kernels need one value per level")

    @property
    def depth(self) -> int:
        return self.base.depth

    @property
    def z_multiple(self) -> int:
        """Z is padded to a multiple of this inside the network."""
        m = 1
        for s in self.z_strides:
            m *= s
        return m

    def to_dict(self) -> dict:
        return asdict(self)


def volume_spec(base: GeneratorSpec, z_size: int, voxel_size=None,
                min_planes: int = 8) -> VolumeSpec:
    """The 3-D network for a stack of ``z_size`` planes with ``voxel_size`` (Z, Y, X) in any one
    unit (None: isotropic). A short or coarse Z axis is never down-sampled."""
    if voxel_size is None:
        sz, sxy = 1.0, 1.0
    else:
        z, y, x = (float(v) for v in voxel_size)
        if min(z, y, x) <= 0:
            raise ValueError(f"voxel sizes must be positive, not {tuple(voxel_size)}")
        sz, sxy = z, min(y, x)
    strides, kernels, planes = [], [], z_size
    for _ in range(base.depth):
        kernels.append(3 if sz <= 2 * sxy and planes >= 3 else 1)
        if sz <= sxy and planes >= min_planes:
            strides.append(2)
            planes, sz = -(-planes // 2), sz * 2
        else:
            strides.append(1)
        sxy *= 2
    return VolumeSpec(base, tuple(strides), tuple(kernels))


def _conv3d(c_in: int, c_out: int, kz: int, k: int, stride: tuple[int, int, int]) -> nn.Module:
    # Replicate padding: reflection needs more planes than a short Z axis may have.
    pad = (k // 2, k // 2, k // 2, k // 2, kz // 2, kz // 2)
    conv = nn.Conv3d(c_in, c_out, (kz, k, k), stride=stride)
    if not any(pad):
        return conv
    return nn.Sequential(nn.ReplicationPad3d(pad), conv)


def _norm_act3d(c: int, norm: bool) -> list[nn.Module]:
    return [*([nn.BatchNorm3d(c)] if norm else []), nn.LeakyReLU(0.2)]


class _Level3d(nn.Module):
    def __init__(self, spec: VolumeSpec, i: int, c_in: int):
        super().__init__()
        b = spec.base
        c_down, c_up, c_skip = b.down[i], b.up[i], b.skip[i]
        kz, sz = spec.z_kernels[i], spec.z_strides[i]
        self.skip = None
        if c_skip:
            self.skip = nn.Sequential(_conv3d(c_in, c_skip, 1, b.kernel_skip, (1, 1, 1)),
                                      *_norm_act3d(c_skip, b.norm))
        self.down = nn.Sequential(
            _conv3d(c_in, c_down, kz, b.kernel_down, (sz, 2, 2)), *_norm_act3d(c_down, b.norm),
            _conv3d(c_down, c_down, kz, b.kernel_down, (1, 1, 1)), *_norm_act3d(c_down, b.norm),
        )
        self.deeper = _Level3d(spec, i + 1, c_down) if i + 1 < b.depth else None
        c_deep = b.up[i + 1] if self.deeper is not None else c_down
        mode = "trilinear" if b.upsample_at(i) == "bilinear" else "nearest"
        self.upsample = nn.Upsample(scale_factor=(sz, 2, 2), mode=mode,
                                    **({"align_corners": False} if mode == "trilinear" else {}))
        c_cat = c_skip + c_deep
        merge: list[nn.Module] = [nn.BatchNorm3d(c_cat)] if b.norm else []
        merge += [_conv3d(c_cat, c_up, kz, b.kernel_up, (1, 1, 1)), *_norm_act3d(c_up, b.norm)]
        if b.conv1x1_up:
            merge += [_conv3d(c_up, c_up, 1, 1, (1, 1, 1)), *_norm_act3d(c_up, b.norm)]
        self.merge = nn.Sequential(*merge)

    def forward(self, x):
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = self.upsample(y)
        if self.skip is not None:
            y = torch.cat([self.skip(x), y], dim=1)
        return self.merge(y)


class SkipNet3d(nn.Module):
    """(N, in, Z, Y, X) -> (N, out, Z, Y, X); Y and X multiples of 2**depth, any Z (padded to
    the Z strides' product inside and cropped back)."""

    def __init__(self, spec: VolumeSpec, in_channels: int, out_channels: int):
        super().__init__()
        self.spec = spec
        self.body = _Level3d(spec, 0, in_channels)
        head: list[nn.Module] = [nn.Conv3d(spec.base.up[0], out_channels, 1)]
        if spec.base.sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[2]
        extra = -n % self.spec.z_multiple
        if extra:
            z = nn.functional.pad(z, (0, 0, 0, 0, 0, extra), mode="replicate")
        return self.head(self.body(z))[:, :, :n]
