"""An opt-in, exact model change before quantization: rotate a plain ViT's residual stream.

Why: the residual stream of a ViT has a few channels far larger than the rest, and every LayerNorm output that
feeds a quantized Linear (qkv, fc1, the head) inherits them, as do the rows of those Linears' weights once the
LayerNorm gains are folded in. An orthogonal rotation ``Q`` of the stream spreads each outlier over all
channels, so a per-tensor activation grid and a per-channel weight grid both waste fewer levels (QuaRot, GLF-Q).
In float the rotated model computes the same logits; the rotation lives entirely in the weights, so the exported
graph is unchanged and costs nothing at run time.

How, for a timm ``VisionTransformer``:

1. Every writer to the stream (patch embedding, class/distillation/register tokens, position embedding, attention
   ``proj``, MLP ``fc2``, with any layer scale folded in) is made to write mean-zero vectors, so the stream is
   mean-zero and each LayerNorm's mean subtraction does nothing.
2. Each LayerNorm's gain and bias move into the Linear that reads it (``qkv``, ``fc1``, ``head``); the
   LayerNorm keeps ``weight = 1, bias = 0``.
3. ``Q`` fixes the all-ones direction (``Q 1 = 1``) and is a random rotation on the mean-zero subspace, so the
   rotated stream stays mean-zero and ``LayerNorm(x Q) = LayerNorm(x) Q``: LayerNorm stays LayerNorm (no RMSNorm
   needed). Writers become ``Q^T W``, readers ``W Q``.

A second, separate change rotates the MLP hidden activation (the input of ``fc2``, the most sensitive site at
4 bits: GELU's output has a long positive tail, so a 3-4-bit grid leaves most values one or two levels). No
LayerNorm sits in front of it to fold into, so the rotation is *online*: a :class:`HiddenRotation` module before
``fc2`` flips the sign of random channels and multiplies each token's hidden vector, in blocks of ``block`` channels,
by the orthogonal Hadamard matrix ``H / sqrt(block)`` (then permutes channels inside each block); ``fc2``'s weight
becomes ``W M`` for that orthogonal map ``M``, so in float the model is unchanged. It is a model change with a cost
at run time (two small float MatMuls per transformer block in the exported graph); the model spec records it
(``mlp_rotation``) so a checkpoint rebuilds the module.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitq.errors import VitqError
from vitq.models.families import mlp_branches
from vitq.models.loading import changed_spec

TOKEN_PARAMS = ("cls_token", "dist_token", "reg_token", "pos_embed")


@dataclass(frozen=True)
class RotationReport:
    """What a rotation changed: its sizes (``width`` of the stream; ``heads`` and ``head_dim``; ``mlps`` and
    ``block``), its seed, and the largest float logit change it caused on a probe batch."""

    sizes: dict[str, int]
    seed: int
    max_logit_change: float

    def summary(self) -> dict:
        return {**self.sizes, "seed": self.seed, "max_logit_change": self.max_logit_change}


def _logit_change(rotated: nn.Module, original: nn.Module, probe: torch.Tensor | None) -> float:
    """The largest logit difference between the two float models on ``probe`` (0 without one); rounding alone
    should explain it."""
    return 0.0 if probe is None else round(float((rotated(probe) - original(probe)).abs().max()), 6)


def rotation_fixing_ones(width: int, seed: int) -> torch.Tensor:
    """A random orthogonal ``width x width`` matrix (float64) with ``Q 1 = 1``: identity on the all-ones direction,
    a Haar-random rotation on its orthogonal complement."""
    gen = torch.Generator().manual_seed(seed)
    ones = torch.ones(width, 1, dtype=torch.float64) / width ** 0.5
    basis, _ = torch.linalg.qr(torch.cat([ones, torch.randn(width, width - 1, generator=gen, dtype=torch.float64)], 1))
    complement = basis[:, 1:]  # orthonormal, orthogonal to the ones vector
    return ones @ ones.T + complement @ random_orthogonal(width - 1, gen) @ complement.T


def random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random ``n x n`` orthogonal matrix (float64)."""
    r, upper = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return r * torch.sign(torch.diagonal(upper))  # QR's sign convention removed


def _check(model: nn.Module, model_name: str, option: str = "rotate") -> VisionTransformer:
    if not isinstance(model, VisionTransformer):
        raise VitqError(f"{option} rotates a plain ViT (timm VisionTransformer: vit_*, deit_*), not {model_name} "
                        f"({type(model).__name__})")
    for name in ("norm_pre", "fc_norm", "head_drop"):
        if not isinstance(getattr(model, name, nn.Identity()), (nn.Identity, nn.Dropout)):
            raise VitqError(f"{option}: {model_name} has a {name} layer, which the rotation does not handle")
    for i, block in enumerate(model.blocks):
        for name in ("norm1", "norm2"):
            if not isinstance(getattr(block, name), nn.LayerNorm):
                raise VitqError(f"{option}: blocks.{i}.{name} of {model_name} is not a LayerNorm")
        if not isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity):
            raise VitqError(f"{option}: blocks.{i}.attn of {model_name} normalizes its output, which the rotation does not handle")
    if not isinstance(model.norm, nn.LayerNorm) or not isinstance(model.head, nn.Linear):
        raise VitqError(f"{option}: {model_name} needs a final LayerNorm and a Linear head")
    return model


def _fold_layer_scale(writer: nn.Linear, scale: nn.Module) -> None:
    """``ls(W x + b)`` with a diagonal layer scale -> ``W' x + b'`` and the scale made the identity."""
    gamma = getattr(scale, "gamma", None)
    if gamma is None:
        return
    writer.weight.mul_(gamma[:, None])
    writer.bias.mul_(gamma)
    scale.gamma.fill_(1.0)


def _rotate_reader(norm: nn.LayerNorm, reader: nn.Linear, q: torch.Tensor) -> None:
    """Move ``norm``'s gain and bias into ``reader`` (which reads only ``norm``'s output) and rotate its input:
    ``W -> W diag(gain) Q``, ``b -> b + W bias``."""
    if reader.bias is None:
        raise VitqError("rotate folds each LayerNorm's bias into the Linear reading it, which needs a bias (qkv_bias=True)")
    w = reader.weight.double()
    reader.bias.copy_((reader.bias.double() + w @ norm.bias.double()).to(reader.bias.dtype))
    reader.weight.copy_(((w * norm.weight.double()[None, :]) @ q).to(reader.weight.dtype))
    norm.weight.fill_(1.0)
    norm.bias.zero_()


def _rotate_writer(weight: torch.Tensor, bias: torch.Tensor | None, q: torch.Tensor) -> None:
    """Writer rows (output channels = the stream) -> ``Q^T C W`` where ``C`` removes the mean (``Q^T C = Q^T - 11^T/d``)."""
    shape = weight.shape
    w = weight.double().reshape(shape[0], -1)
    w = q.T @ (w - w.mean(0, keepdim=True))
    weight.copy_(w.reshape(shape).to(weight.dtype))
    if bias is not None:
        bias.copy_((q.T @ (bias.double() - bias.double().mean())).to(bias.dtype))


@torch.no_grad()
def rotate_residual(model: nn.Module, model_name: str, seed: int = 0,
                    probe: torch.Tensor | None = None) -> tuple[nn.Module, RotationReport]:
    """A copy of the float ViT ``model`` with its residual stream rotated (module docstring); ``model`` is left as it
    was. ``probe`` (a few images): report the largest logit change, which float rounding alone should explain."""
    vit = _check(model.eval(), model_name)
    rotated = copy.deepcopy(vit)
    width = rotated.embed_dim
    q = rotation_fixing_ones(width, seed)
    for block in rotated.blocks:
        _fold_layer_scale(block.attn.proj, block.ls1)
        _fold_layer_scale(block.mlp.fc2, block.ls2)
        _rotate_reader(block.norm1, block.attn.qkv, q)
        _rotate_reader(block.norm2, block.mlp.fc1, q)
        for writer in (block.attn.proj, block.mlp.fc2):
            _rotate_writer(writer.weight, writer.bias, q)
    _rotate_reader(rotated.norm, rotated.head, q)
    _rotate_writer(rotated.patch_embed.proj.weight, rotated.patch_embed.proj.bias, q)
    for name in TOKEN_PARAMS:
        p = getattr(rotated, name, None)
        if isinstance(p, torch.Tensor):
            centred = p.double() - p.double().mean(-1, keepdim=True)
            p.copy_((centred @ q).to(p.dtype))
    changed_spec(rotated, vit, model_name)  # the same architecture: a checkpoint of it rebuilds from the weights alone
    return rotated, RotationReport({"width": width}, seed, _logit_change(rotated, vit, probe))


@torch.no_grad()
def rotate_attention_heads(model: nn.Module, model_name: str, seed: int = 0,
                           probe: torch.Tensor | None = None) -> tuple[nn.Module, RotationReport]:
    """A copy of the float ViT ``model`` with every attention head's queries and keys rotated by one random orthogonal
    ``R`` and its values by another, ``R_v``; ``model`` is left as it was.

    Why: ``q @ k^T`` and ``probs @ v`` quantize both operands, and the ``proj`` input is the values mixed by the
    attention, all with outlier channels of their own that the residual rotation does not reach. ``(q R)(k R)^T =
    q k^T``, and ``probs (v R_v) = (probs v) R_v`` which ``proj`` undoes (``W_proj -> W_proj R_v`` per head), so the
    rotation folds into the ``qkv`` rows and the ``proj`` columns: exact in float, nothing added to the graph."""
    vit = _check(model.eval(), model_name, "rotate_heads")
    rotated = copy.deepcopy(vit)
    gen = torch.Generator().manual_seed(seed)
    heads = 0
    for i, block in enumerate(rotated.blocks):
        attn = block.attn
        plain = all(isinstance(getattr(attn, name, nn.Identity()), nn.Identity) for name in ("q_norm", "k_norm"))
        if not plain or getattr(attn, "gate", None) is not None or not isinstance(getattr(attn, "qkv", None), nn.Linear):
            raise VitqError(f"rotate_heads: blocks.{i}.attn of {model_name} has no plain fused qkv (normalized or gated "
                            "q / k / v), which the rotation does not handle")
        n, d = attn.num_heads, attn.head_dim
        weight = attn.qkv.weight.double().unflatten(0, (3, n, d))  # rows: (q / k / v, head, channel)
        bias = attn.qkv.bias.double().unflatten(0, (3, n, d)) if attn.qkv.bias is not None else None
        proj = attn.proj.weight.double().unflatten(1, (n, d))  # columns: (head, channel)
        for h in range(n):
            r_qk, r_v = random_orthogonal(d, gen), random_orthogonal(d, gen)
            weight[:2, h] = r_qk.T @ weight[:2, h]  # q_h R = x W^T R = x (R^T W)^T, the same R for k_h
            weight[2, h] = r_v.T @ weight[2, h]
            if bias is not None:
                bias[:2, h] = bias[:2, h] @ r_qk
                bias[2, h] = bias[2, h] @ r_v
            proj[:, h] = proj[:, h] @ r_v
        attn.qkv.weight.copy_(weight.flatten(0, 2).to(attn.qkv.weight.dtype))
        if bias is not None:
            attn.qkv.bias.copy_(bias.flatten(0, 2).to(attn.qkv.bias.dtype))
        attn.proj.weight.copy_(proj.flatten(1).to(attn.proj.weight.dtype))
        heads += n
    changed_spec(rotated, vit, model_name)
    sizes = {"heads": heads, "head_dim": rotated.blocks[0].attn.head_dim}
    return rotated, RotationReport(sizes, seed, _logit_change(rotated, vit, probe))


# Channels per block of the online MLP rotation: the largest power of two dividing the hidden width, at most this
# (docs/reconstruction.md "Online MLP rotation": accuracy and onnxruntime cost of each block size)
MLP_ROTATION_BLOCK = 256


def hadamard(n: int) -> torch.Tensor:
    """The ``n x n`` Sylvester Hadamard matrix scaled to be orthogonal (float64; ``n`` a power of two)."""
    if n < 1 or n & (n - 1):
        raise VitqError(f"a Hadamard rotation needs a power-of-two size, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n ** 0.5


class HiddenRotation(nn.Module):
    """An orthogonal map of the last dimension: random signs per channel (``width``), then in blocks of
    ``block = rows * cols`` channels the Hadamard matrix ``H_block = H_rows (x) H_cols`` (Kronecker product, exact for
    Sylvester matrices), applied to each block viewed as a ``rows x cols`` matrix ``X`` as ``(X H_cols)^T H_rows =
    (H_rows X H_cols)^T``: two MatMuls by small constant matrices on the right, ``rows + cols`` multiply-adds per
    channel instead of ``block`` (32 instead of 256). The final transpose permutes channels inside each block, which
    the layer reading the output absorbs (:func:`rotate_mlp_hidden` folds the whole map into ``fc2``). Buffers, so
    checkpoints carry them; exported as Mul -> Reshape -> MatMul -> Transpose -> MatMul -> Reshape."""

    def __init__(self, width: int, block: int) -> None:
        super().__init__()
        if width % block:
            raise VitqError(f"rotate_mlp: hidden width {width} is not a multiple of the block size {block}")
        self.block = block
        cols = 1 << (block.bit_length() - 1) // 2
        self.register_buffer("signs", torch.ones(width))
        self.register_buffer("rows", hadamard(block // cols).float())
        self.register_buffer("cols", hadamard(cols).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = (x * self.signs).unflatten(-1, (-1, self.rows.shape[0], self.cols.shape[0]))
        return ((blocks @ self.cols).transpose(-1, -2) @ self.rows).flatten(-3)

    def extra_repr(self) -> str:
        return f"width={self.signs.numel()}, block={self.block} ({self.rows.shape[0]} x {self.cols.shape[0]})"


def mlp_rotation_block(width: int, limit: int = MLP_ROTATION_BLOCK) -> int:
    """The largest power of two that divides ``width`` and is at most ``limit``."""
    return min(width & -width, limit)


def add_hidden_rotations(model: nn.Module, model_name: str,
                         limit: int = MLP_ROTATION_BLOCK) -> list[tuple[HiddenRotation, nn.Linear]]:
    """Put an identity :class:`HiddenRotation` (blocks of :func:`mlp_rotation_block` channels) in front of every MLP's
    ``fc2``, in the slot timm's ``Mlp`` keeps for a hidden norm (``mlp.norm``), in place; returns (rotation, fc2)
    pairs. A checkpoint's buffers then set the matrices."""
    pairs = []
    for atom in mlp_branches(model, model_name, "rotate_mlp"):
        mlp = atom.mlp
        fc2 = getattr(mlp, "fc2", None)
        if not isinstance(fc2, nn.Linear) or not isinstance(getattr(mlp, "norm", None), nn.Identity):
            raise VitqError(f"rotate_mlp: {model_name}'s MLPs need a Linear fc2 and no hidden norm (timm Mlp)")
        mlp.norm = HiddenRotation(fc2.in_features, mlp_rotation_block(fc2.in_features, limit))
        pairs.append((mlp.norm, fc2))
    return pairs


@torch.no_grad()
def rotate_mlp_hidden(model: nn.Module, model_name: str, seed: int = 0, limit: int = MLP_ROTATION_BLOCK,
                      probe: torch.Tensor | None = None) -> tuple[nn.Module, RotationReport]:
    """A copy of the float ``model`` with every MLP hidden activation rotated online (module docstring); ``model`` is
    left as it was. ``probe``: report the largest logit change, which float rounding alone should explain."""
    model = model.eval()
    rotated = copy.deepcopy(model)
    pairs = add_hidden_rotations(rotated, model_name, limit)
    for i, (rotation, fc2) in enumerate(pairs):
        gen = torch.Generator().manual_seed(seed * 10007 + i)
        rotation.signs.copy_(torch.randint(0, 2, rotation.signs.shape, generator=gen) * 2.0 - 1)
        # x -> x M with M orthogonal, so fc2(x) = fc2'(x M) for W' = W M; M's rows are the images of the unit vectors
        m = rotation(torch.eye(rotation.signs.numel())).double()
        fc2.weight.copy_((fc2.weight.double() @ m).to(fc2.weight.dtype))
    changed_spec(rotated, model, model_name, mlp_rotation=limit)
    sizes = {"mlps": len(pairs), "block": max(r.block for r, _ in pairs)}
    return rotated, RotationReport(sizes, seed, _logit_change(rotated, model, probe))
