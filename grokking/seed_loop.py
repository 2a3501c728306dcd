"""The seed notebook's training loop, as the baseline ``grokking bench`` times: our transcription.

The seed (``shared/seed/000_761baa7942576aca.txt``) trains its own einsum transformer on
``(a + b) mod p`` with a loop whose costs this module keeps, because they are what the bench
measures against: a full batch every epoch, the batch rebuilt with ``torch.tensor`` from a
list of Python tuples and its labels recomputed in Python each time, logits through four
einsum products per attention, float64 cross-entropy, and the test loss computed with
autograd on (the seed never turns it off), each loss read back with ``.item()``. The model,
its initialisation order (so a seed gives the seed's weights), parameter names and shapes,
the AdamW recipe and the warm-up match the seed's, so ``--save`` writes a seed-format
``final.pth`` that ``grokking.checkpoint.load_model`` reads.

It imports nothing from this package: it runs as ``python -m grokking.seed_loop`` in a
process of its own, so that the timing is the seed's alone, and it ships in the wheel so
that ``grokking bench`` needs no checkout. Its command line is the shared reference
script's (``--p --frac --seed --epochs --log --threads --save``, plus ``--device``), and so is its output: a
line ``epoch train_loss test_loss train_acc test_acc`` every ``--log`` epochs and at the
last, then ``seconds_per_epoch S``. ``tests/test_seed_loop.py`` holds it to that reference.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

Triple = tuple[int, int, int]


def _param(*shape: int, scale: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) / math.sqrt(scale))


class _Holder(nn.Module):
    """A named bag of parameters: the seed's module tree only matters for its state_dict names."""


def _holder(**tensors: torch.Tensor) -> _Holder:
    module = _Holder()
    for name, tensor in tensors.items():
        if isinstance(tensor, nn.Parameter):
            module.register_parameter(name, tensor)
        else:
            module.register_buffer(name, tensor)
    return module


class SeedTransformer(nn.Module):
    """The seed's 1-layer (``n_layers``) transformer without LayerNorm: ReLU MLP, causal
    attention scaled by sqrt(d_head), no attention biases, no unembedding bias. Parameters are
    created in the seed's order, so ``torch.manual_seed(s)`` before construction gives its
    initial weights exactly; state_dict names and shapes are the seed's
    (``embed.W_E [d_model, d_vocab]``, ``blocks.0.attn.W_K [heads, d_head, d_model]``, ...)."""

    def __init__(self, d_vocab: int, d_model: int = 128, d_mlp: int = 512, n_heads: int = 4, n_ctx: int = 3,
                 n_layers: int = 1):
        super().__init__()
        d_head = d_model // n_heads
        self.n_heads, self.d_head = n_heads, d_head
        self.embed = _holder(W_E=_param(d_model, d_vocab, scale=d_model))
        self.pos_embed = _holder(W_pos=_param(n_ctx, d_model, scale=d_model))
        blocks = []
        for _ in range(n_layers):
            # the seed draws K before Q before V, then O; the MLP's input weight before its output weight
            attn = _holder(W_K=_param(n_heads, d_head, d_model, scale=d_model),
                           W_Q=_param(n_heads, d_head, d_model, scale=d_model),
                           W_V=_param(n_heads, d_head, d_model, scale=d_model),
                           W_O=_param(d_model, d_head * n_heads, scale=d_model),
                           mask=torch.tril(torch.ones(n_ctx, n_ctx)))
            mlp = _holder(W_in=_param(d_mlp, d_model, scale=d_model), b_in=nn.Parameter(torch.zeros(d_mlp)),
                          W_out=_param(d_model, d_mlp, scale=d_model), b_out=nn.Parameter(torch.zeros(d_model)))
            block = nn.Module()
            block.attn, block.mlp = attn, mlp
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.unembed = _holder(W_U=_param(d_model, d_vocab, scale=d_vocab))

    def _attend(self, attn: _Holder, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        # [batch, head, pos, d_head], as the seed's einsums over "ihd,bpd->biph"
        q, k, v = (torch.einsum("ihd,bpd->biph", w, x) for w in (attn.W_Q, attn.W_K, attn.W_V))
        scores = torch.einsum("biph,biqh->biqp", k, q)
        # The seed masks by subtracting 1e10 above the diagonal of the lower-triangular part (not -inf)
        mask = attn.mask[:n, :n]
        scores = torch.tril(scores) - 1e10 * (1 - mask)
        pattern = F.softmax(scores / math.sqrt(self.d_head), dim=-1)
        z = torch.einsum("biph,biqp->biqh", v, pattern)
        z = z.transpose(1, 2).reshape(x.shape[0], n, self.n_heads * self.d_head)  # head-major, as the seed's
        return torch.einsum("df,bqf->bqd", attn.W_O, z)

    @staticmethod
    def _mlp(mlp: _Holder, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(torch.einsum("md,bpd->bpm", mlp.W_in, x) + mlp.b_in)
        return torch.einsum("dm,bpm->bpd", mlp.W_out, hidden) + mlp.b_out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed.W_E[:, tokens].permute(1, 2, 0)  # [d_model, batch, pos] -> [batch, pos, d_model]
        x = x + self.pos_embed.W_pos[: x.shape[-2]]
        for block in self.blocks:
            x = x + self._attend(block.attn, x)
            x = x + self._mlp(block.mlp, x)
        return x @ self.unembed.W_U


def seed_split(p: int, frac: float, seed: int) -> tuple[list[Triple], list[Triple]]:
    """The seed's ``gen_train_test``: every ``(a, b, p)``, shuffled by Python's ``random``."""
    pairs = [(a, b, p) for a in range(p) for b in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    cut = int(frac * len(pairs))
    return pairs[:cut], pairs[cut:]


def float64_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The seed's ``cross_entropy_high_precision``: log-softmax in float64 (float32 cannot
    resolve the losses of a confident model), mean negative log-probability of the labels."""
    log_probs = F.log_softmax(logits.to(torch.float64), dim=-1)
    return -log_probs.gather(-1, labels[:, None]).mean()


def _loss(model: SeedTransformer, data: Sequence[Triple], p: int,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Rebuilt from the Python lists on every call and copied to the device, labels too, as the
    # seed's full_loss does: part of what the seed's epoch costs.
    logits = model(torch.tensor(data).to(device))[:, -1]
    labels = torch.tensor([(a + b) % p for a, b, _ in data]).to(device)
    return float64_cross_entropy(logits, labels), logits, labels


def train(p: int = 113, frac: float = 0.3, seed: int = 0, epochs: int = 200, log_every: int = 100,
          print_fn: Callable[[str], Any] = print, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run the seed's loop on ``device`` (the seed's ``model.to(device)``: the weights are drawn
    on the CPU, so a seed gives the same initial weights everywhere); returns its ``final.pth``
    dict (``model``, ``optimizer``, ``scheduler``, the loss lists, ``epoch``, the splits) plus
    ``seconds_per_epoch``."""
    device = torch.device(device)
    torch.manual_seed(seed)
    train_data, test_data = seed_split(p, frac, seed)
    model = SeedTransformer(d_vocab=p + 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(step / 10, 1))
    train_losses: list[float] = []
    test_losses: list[float] = []
    train_loss = test_loss = torch.tensor(float("nan"))
    epoch = -1
    start = time.perf_counter()
    for epoch in range(epochs):
        train_loss, train_logits, train_labels = _loss(model, train_data, p, device)
        test_loss, test_logits, test_labels = _loss(model, test_data, p, device)  # with autograd on, as the seed
        train_losses.append(train_loss.item())
        test_losses.append(test_loss.item())
        if epoch % log_every == 0 or epoch == epochs - 1:
            train_acc = (train_logits.argmax(-1) == train_labels).float().mean().item()
            test_acc = (test_logits.argmax(-1) == test_labels).float().mean().item()
            print_fn(f"{epoch} {train_loss.item():.6f} {test_loss.item():.6f} {train_acc:.4f} {test_acc:.4f}")
        optimizer.zero_grad()
        train_loss.backward()
        optimizer.step()
        scheduler.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    # After the loop, as the seed saves it: the weights have taken one step more than the last losses saw.
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "train_loss": train_loss, "test_loss": test_loss, "train_losses": train_losses,
            "test_losses": test_losses, "epoch": epoch, "train_data": train_data, "test_data": test_data,
            "seconds_per_epoch": seconds / max(epochs, 1)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m grokking.seed_loop", description=__doc__.split("\n")[0])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--frac", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--log", type=int, default=100, help="print the losses every N epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--save", default="", help="write the seed's final.pth dict here at the end")
    parser.add_argument("--device", default="cpu", help="where to train, e.g. cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    if args.threads:  # this is a program of its own (a subprocess of the bench): its threads are its to set
        torch.set_num_threads(args.threads)
    result = train(args.p, args.frac, args.seed, args.epochs, args.log, print_fn=lambda line: print(line, flush=True),
                   device=args.device)
    seconds = result.pop("seconds_per_epoch")
    if args.save:
        torch.save(result, args.save)
    print(f"seconds_per_epoch {seconds:.6f}")


if __name__ == "__main__":
    main()
