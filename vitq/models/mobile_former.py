"""Mobile-Former (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022).

timm has no Mobile-Former, so vitq carries its own, written for quantization: every weight layer is an
``nn.Linear`` / ``nn.Conv2d``, every conv that has a BatchNorm is a ``Conv2d`` directly followed by a
``BatchNorm2d`` (so BN can be folded), and every attention matmul is a :class:`~vitq.quant.modules.MatMul`
module (so ``wrap_model`` quantizes both operands).

A Mobile-Former block runs a MobileNet branch on the feature map and a tiny transformer on a few learnable
global tokens, joined by a two-way bridge. Per block, in order:

* ``mobile_to_former``: the tokens query the flattened map (keys = values = the map, no projection on the map side);
* ``former``: a post-norm transformer block (MHSA + FFN) on the tokens;
* ``mobile``: an inverted bottleneck whose Dynamic ReLUs take their coefficients from the first token;
* ``former_to_mobile``: the map queries the tokens (keys/values projected from the tokens, none on the map side).

Rows of the configs below are the paper's per-model specification (appendix tables of the paper; the same rows
as the authors' released model definitions). No weights fit this code, so ``pretrained=True`` is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from vitq.errors import VitqError
from vitq.quant.modules import MatMul

__all__ = ["MobileFormer", "MobileFormerCfg"]


@dataclass(frozen=True)
class MobileFormerCfg:
    """One row set of the paper's specification.

    ``blocks`` rows are ``(exp1, out, stride, exp2)``: ``exp2 == 0`` is the bneck-lite block (depthwise expansion by
    ``exp1`` + pointwise projection, no bridge); a stride-2 row is the downsampling Mobile-Former block (depthwise
    expansion by ``exp1`` with stride 2, projection, depthwise expansion of ``out`` by ``exp2``, projection); other
    rows are the standard block (pointwise expansion by ``exp1``, depthwise, projection; ``exp2`` unused).
    """

    stem: int
    blocks: tuple[tuple[int, int, int, int], ...]
    num_tokens: int
    token_dim: int
    head_hidden: int
    groups: int = 1  # groups of every pointwise conv (4 in the 26M model, which trades params for channel shuffles)
    head_exp: int = 6  # the head's 1x1 conv widens the last map by this factor
    bridge_heads: int = 2
    former_heads: int = 4
    former_mlp_ratio: int = 2  # the paper uses FFN expansion 2 instead of the usual 4


_BLOCKS_52M = (
    (3, 12, 2, 0),
    (3, 12, 1, 3), (6, 24, 2, 4), (3, 24, 1, 3), (6, 48, 2, 4), (4, 48, 1, 4), (6, 64, 1, 4), (6, 96, 2, 4), (6, 96, 1, 4),
)
_BLOCKS_151M = (
    (2, 12, 1, 0),
    (6, 16, 2, 4), (3, 16, 1, 3), (6, 32, 2, 4), (3, 32, 1, 3), (6, 64, 2, 4), (4, 64, 1, 4),
    (6, 88, 1, 4), (6, 88, 1, 4), (6, 128, 2, 4), (6, 128, 1, 4), (6, 128, 1, 4),
)

MODEL_CFGS: dict[str, MobileFormerCfg] = {
    "mobile_former_26m": MobileFormerCfg(stem=8, blocks=_BLOCKS_52M, num_tokens=3, token_dim=128, head_hidden=1024, groups=4),
    "mobile_former_52m": MobileFormerCfg(stem=8, blocks=_BLOCKS_52M, num_tokens=3, token_dim=128, head_hidden=1024),
    "mobile_former_96m": MobileFormerCfg(
        stem=12,
        blocks=((2, 12, 1, 0), (6, 16, 2, 4), (6, 32, 2, 4), (3, 32, 1, 3), (6, 64, 2, 4), (4, 64, 1, 4), (6, 88, 1, 4),
                (6, 128, 2, 4), (6, 128, 1, 4)),
        num_tokens=4, token_dim=128, head_hidden=1280,
    ),
    "mobile_former_151m": MobileFormerCfg(stem=12, blocks=_BLOCKS_151M, num_tokens=6, token_dim=192, head_hidden=1280),
    "mobile_former_214m": MobileFormerCfg(
        stem=12,
        blocks=((2, 12, 1, 0), (6, 20, 2, 4), (3, 20, 1, 4), (6, 40, 2, 4), (4, 40, 1, 4), (6, 80, 2, 4), (4, 80, 1, 4),
                (6, 112, 1, 4), (6, 112, 1, 4), (6, 160, 2, 4), (6, 160, 1, 4), (6, 160, 1, 4)),
        num_tokens=6, token_dim=192, head_hidden=1600,
    ),
    "mobile_former_294m": MobileFormerCfg(
        stem=16,
        blocks=((2, 16, 1, 0), (6, 24, 2, 4), (4, 24, 1, 4), (6, 48, 2, 4), (4, 48, 1, 4), (6, 96, 2, 4), (4, 96, 1, 4),
                (6, 128, 1, 4), (6, 128, 1, 4), (6, 192, 2, 4), (6, 192, 1, 4), (6, 192, 1, 4)),
        num_tokens=6, token_dim=192, head_hidden=1920,
    ),
    "mobile_former_508m": MobileFormerCfg(
        stem=24,
        blocks=((2, 24, 1, 0), (6, 40, 2, 4), (3, 40, 1, 3), (6, 72, 2, 4), (3, 72, 1, 3), (6, 128, 2, 4), (4, 128, 1, 4),
                (6, 176, 1, 4), (6, 176, 1, 4), (6, 240, 2, 4), (6, 240, 1, 4), (6, 240, 1, 4)),
        num_tokens=6, token_dim=192, head_hidden=1920,
    ),
}


class ConvBN(nn.Sequential):
    """``conv`` then ``bn`` as adjacent modules, so BN folding finds the pair by name and order."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class ChannelShuffle(nn.Module):
    """Interleaves channel groups so that a grouped pointwise conv still mixes all channels over two layers."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def pointwise(cin: int, cout: int, groups: int) -> nn.Sequential:
    """1x1 ConvBN; grouped (26M) ones get a channel shuffle in front so each group sees every input group."""
    conv = ConvBN(cin, cout, groups=groups)
    return nn.Sequential(ChannelShuffle(groups), conv) if groups > 1 else nn.Sequential(conv)


class CrossAttention(nn.Module):
    """Multi-head softmax attention on already-projected ``q``, ``k``, ``v`` of shape (B, N, C).

    Shared by both bridges and the former; the projections differ (the bridges drop those on the map side),
    the attention itself does not. Both products are :class:`MatMul` modules so vitq can quantize them.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qk_matmul = MatMul(probabilities=False)
        self.av_matmul = MatMul(probabilities=True)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        attn = self.qk_matmul(self._split(q) * self.scale, self._split(k).transpose(-2, -1)).softmax(dim=-1)
        return self.av_matmul(attn, self._split(v)).transpose(1, 2).reshape(b, n, c)


class MobileToFormer(nn.Module):
    """Tokens gather from the map: only the token side is projected (query in, output back to token width)."""

    def __init__(self, channels: int, token_dim: int, num_heads: int) -> None:
        super().__init__()
        self.q = nn.Linear(token_dim, channels)
        self.attn = CrossAttention(channels, num_heads)
        self.proj = nn.Linear(channels, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        feats = x.flatten(2).transpose(1, 2)  # (B, HW, C): keys and values as they are
        return self.norm(tokens + self.proj(self.attn(self.q(tokens), feats, feats)))


class FormerToMobile(nn.Module):
    """The map reads the tokens: each pixel is its own query, keys/values are projected from the tokens."""

    def __init__(self, channels: int, token_dim: int, num_heads: int) -> None:
        super().__init__()
        self.k = nn.Linear(token_dim, channels)
        self.v = nn.Linear(token_dim, channels)
        self.attn = CrossAttention(channels, num_heads)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out = self.attn(x.flatten(2).transpose(1, 2), self.k(tokens), self.v(tokens))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Former(nn.Module):
    """Post-norm transformer block on the global tokens (MHSA + FFN with expansion 2, as in the paper)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn = CrossAttention(dim, num_heads)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        tokens = self.norm1(tokens + self.proj(self.attn(q, k, v)))
        return self.norm2(tokens + self.mlp(tokens))


class DynamicReLU(nn.Module):
    """Per-channel ``max(a1 * x, a2 * x)`` whose slopes come from the first global token (DY-ReLU, paper Sec. 3).

    The two-layer MLP ends in a hard sigmoid ``s``; ``a1 = 2s`` and ``a2 = 2s - 1`` so ``s = 0.5`` is plain ReLU.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.hyper = nn.Sequential(
            nn.Linear(token_dim, token_dim // reduction), nn.ReLU(),
            nn.Linear(token_dim // reduction, 2 * channels), nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        a1, a2 = (2.0 * self.hyper(token)[:, :, None, None]).chunk(2, dim=1)
        return torch.maximum(x * a1, x * (a2 - 1.0))


class MobileBlock(nn.Module):
    """The mobile sub-block: inverted bottleneck with token-driven Dynamic ReLUs after its first two convs.

    stride 1: pointwise expansion -> depthwise 3x3 -> pointwise projection (+ identity when shapes match).
    stride 2: depthwise 3x3/2 expanding ``cin * exp1`` -> projection -> depthwise expanding ``cout * exp2`` ->
    projection, with a residual around the last two (the paper's four-layer downsampling block).
    """

    def __init__(self, cin: int, cout: int, stride: int, exp1: int, exp2: int, token_dim: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        if stride == 1:
            hidden1, hidden2 = cin * exp1, cin * exp1
            self.conv1 = pointwise(cin, hidden1, groups)
            self.conv2 = ConvBN(hidden1, hidden2, 3, groups=hidden1)
            self.conv3 = pointwise(hidden2, cout, groups)
            self.residual = cin == cout
        else:
            hidden1, hidden2 = cin * exp1, cout * exp2
            self.conv1 = ConvBN(cin, hidden1, 3, stride, groups=cin)
            self.mid = pointwise(hidden1, cout, groups)
            self.conv2 = ConvBN(cout, hidden2, 3, groups=cout)
            self.conv3 = pointwise(hidden2, cout, groups)
            self.residual = True  # around the second depthwise + projection pair
        self.act1 = DynamicReLU(hidden1, token_dim)
        self.act2 = DynamicReLU(hidden2, token_dim)

    def forward(self, x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x), token)
        if self.stride != 1:
            x = y = self.mid(y)
        y = self.conv3(self.act2(self.conv2(y), token))
        return x + y if self.residual else y


class BneckLite(nn.Module):
    """First block (no bridge yet): depthwise 3x3 expanding ``cin * exp`` channels, then a pointwise projection."""

    def __init__(self, cin: int, cout: int, stride: int, exp: int, groups: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cin * exp, 3, stride, groups=cin)
        self.act = nn.ReLU6()
        self.conv2 = pointwise(cin * exp, cout, groups)
        self.use_identity = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv2(self.act(self.conv1(x)))
        return (x + y if self.use_identity else y), tokens


class MobileFormerBlock(nn.Module):
    """Bridge in, former, mobile, bridge out; the mobile half sees tokens that already saw its input map."""

    def __init__(self, cin: int, cout: int, stride: int, exp1: int, exp2: int, cfg: MobileFormerCfg) -> None:
        super().__init__()
        self.mobile_to_former = MobileToFormer(cin, cfg.token_dim, cfg.bridge_heads)
        self.former = Former(cfg.token_dim, cfg.former_heads, cfg.former_mlp_ratio)
        self.mobile = MobileBlock(cin, cout, stride, exp1, exp2, cfg.token_dim, cfg.groups)
        self.former_to_mobile = FormerToMobile(cout, cfg.token_dim, cfg.bridge_heads)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.former(self.mobile_to_former(x, tokens))
        x = self.mobile(x, tokens[:, 0])
        return self.former_to_mobile(x, tokens), tokens


class Blocks(nn.Sequential):
    """``nn.Sequential`` of blocks that threads the (map, tokens) pair through them."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        for block in self:
            x, tokens = block(x, tokens)
        return x, tokens


class ClassifierHead(nn.Module):
    """1x1 conv widening the map, average pool, concat with the first token, FC + BN + h-swish, dropout, FC."""

    def __init__(self, cin: int, cfg: MobileFormerCfg, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        width = cin * cfg.head_exp
        self.shuffle = ChannelShuffle(cfg.groups) if cfg.groups > 1 else nn.Identity()
        self.conv = nn.Conv2d(cin, width, 1, groups=cfg.groups, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pool_act = nn.Hardswish()
        self.pre_fc = nn.Linear(width + cfg.token_dim, cfg.head_hidden)
        self.pre_norm = nn.BatchNorm1d(cfg.head_hidden)
        self.pre_act = nn.Hardswish()
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(cfg.head_hidden, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool_act(self.pool(self.act(self.bn(self.conv(self.shuffle(x))))).flatten(1))
        x = self.pre_act(self.pre_norm(self.pre_fc(torch.cat([x, tokens[:, 0]], dim=1))))
        return x if pre_logits else self.fc(self.drop(x))


class MobileFormer(nn.Module):
    """Stem conv, bneck-lite, Mobile-Former blocks, a last tokens-from-map bridge, classifier head."""

    def __init__(self, cfg: MobileFormerCfg, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.tokens = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.token_dim))
        self.stem = nn.Sequential()
        self.stem.conv = nn.Conv2d(in_chans, cfg.stem, 3, 2, 1, bias=False)
        self.stem.bn = nn.BatchNorm2d(cfg.stem)
        self.stem.act = nn.ReLU6()

        blocks: list[nn.Module] = []
        cin = cfg.stem
        for exp1, cout, stride, exp2 in cfg.blocks:
            if exp2 == 0:
                blocks.append(BneckLite(cin, cout, stride, exp1, cfg.groups))
            else:
                blocks.append(MobileFormerBlock(cin, cout, stride, exp1, exp2, cfg))
            cin = cout
        self.blocks = Blocks(*blocks)
        # The head reads the first token; without this bridge it would not have seen the last block's output.
        self.final_bridge = MobileToFormer(cin, cfg.token_dim, cfg.bridge_heads)
        self.num_features = cin * cfg.head_exp
        self.head_hidden_size = cfg.head_hidden
        self.head = ClassifierHead(cin, cfg, num_classes, drop_rate)
        self.apply(_init_weights)
        trunc_normal_(self.tokens, std=1.0)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"Mobile-Former pools by average only, got global_pool={global_pool!r}")
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the last feature map (B, C, H/32, W/32) and the global tokens (B, T, D): the head needs both."""
        tokens = self.tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        x, tokens = self.blocks(self.stem(x), tokens)
        return x, self.final_bridge(x, tokens)

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        return self.head(*features, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """Kaiming for convs; small Linears so each DY-ReLU starts as a plain ReLU and attention starts near uniform."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _create(variant: str, pretrained: bool = False, **kwargs) -> MobileFormer:
    if pretrained:
        raise VitqError(
            f"{variant}: no pretrained weights for vitq's Mobile-Former (none on the timm hub; the authors' checkpoints use "
            "another layout); use pretrained=False and load a local checkpoint"
        )
    return build_model_with_cfg(MobileFormer, variant, pretrained=False, model_cfg=MODEL_CFGS[variant], **kwargs)


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
        "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv", "classifier": "head.fc", **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in MODEL_CFGS})


def _entrypoint(name: str):
    """A named timm entrypoint (timm registers models by function name) for one config row."""
    def create(pretrained: bool = False, **kwargs) -> MobileFormer:
        return _create(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"Mobile-Former {name.rsplit('_', 1)[-1].upper()} MAdds config (paper table)."
    return create


for _name in MODEL_CFGS:
    globals()[_name] = register_model(_entrypoint(_name))


def pack_map_tokens(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map + (B, T, D) tokens -> (B, C*H*W + T*D): one tensor for reconstruction caches."""
    return torch.cat([x.flatten(1), tokens.flatten(1)], dim=1)


class PackedMapTokens(nn.Module):
    """Runs a Mobile-Former block, which maps (map, tokens) -> (map, tokens), on packed tensors, so a block
    is a reconstruction unit with one input and one output. The map is square (H == W), as in every
    Mobile-Former input vitq makes."""

    def __init__(self, block: nn.Module, in_channels: int, tokens: tuple[int, int]) -> None:
        super().__init__()
        self.block, self.in_channels, self.tokens = block, in_channels, tokens

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n_tok = self.tokens[0] * self.tokens[1]
        flat = z[:, :-n_tok]
        side = math.isqrt(flat.shape[1] // self.in_channels)
        x = flat.reshape(z.shape[0], self.in_channels, side, side)
        return pack_map_tokens(*self.block(x, z[:, -n_tok:].reshape(z.shape[0], *self.tokens)))
