"""A decoder-only transformer (Llama-style: RMSNorm, causal attention, SwiGLU MLP, untied head) for benchmarks.

Sizes: ``decoder("350m")`` 369M parameters (d 1024, 24 blocks), ``decoder("7b")`` 6.74B (d 4096, 32 blocks, the
LLaMA-7B shapes of Touvron et al., 2023). ``depth=`` overrides the number of blocks. Build big ones under
``torch.device("meta")``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SIZES = {  # d_model, blocks, heads, ffn hidden, vocab
    "tiny": (64, 2, 4, 176, 512),
    "350m": (1024, 24, 16, 2816, 32000),
    "7b": (4096, 32, 32, 11008, 32000),
}


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (f(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d, hidden, bias=False)
        self.up = nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d)
        self.attn = Attention(d, heads)
        self.norm2 = nn.RMSNorm(d)
        self.mlp = MLP(d, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Decoder(nn.Module):
    def __init__(self, d: int, depth: int, heads: int, hidden: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*[Block(d, heads, hidden) for _ in range(depth)])
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(ids))))


def decoder(size: str = "350m", depth: int | None = None) -> Decoder:
    d, blocks, heads, hidden, vocab = SIZES[size]
    return Decoder(d, depth if depth is not None else blocks, heads, hidden, vocab)


if __name__ == "__main__":
    with torch.device("meta"):
        for s in SIZES:
            print(s, sum(p.numel() for p in decoder(s).parameters()))
