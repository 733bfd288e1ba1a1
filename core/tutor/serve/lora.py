"""Per-row LoRA for the server's mixed batches: every adapter of a layer side by side, each row masked to its own.

peft mixes adapters in one batch (`adapter_names=`) by looping, in every LoRA
layer, over the adapters present: slice the rows, run lora_A and lora_B as
modules, scatter back. On a 2-core CPU that is about 40 ms of Python per
decoding step for three adapters on SmolLM2-135M (210 LoRA layers), a third
of the step. Here each layer holds A = [A_1 | A_2 | ...] (in x sum of ranks)
and B = [B_1; B_2; ...] (sum of ranks x out; peft's weights become views of
them, so nothing is held twice), and a step is two small matmuls and a mask:

    y = base(x) + ((x @ A) * mask_row) @ B

where a row's mask is its own adapter's LoRA scaling on that adapter's
columns and zero elsewhere (all zero for the base model). A row's LoRA terms from other adapters are exact zeros, so each row
gets its own adapter only, and the same arithmetic whatever its neighbours
(tests/test_serve.py checks both against peft and solo runs).

Only plain LoRA on Linear layers, in eval mode, is stacked; anything else
(DoRA, embedding or convolution LoRA) keeps peft's own mixed-batch path.
"""

from __future__ import annotations

from functools import partial


class Unstackable(Exception):
    """The adapters use something this stacking does not reproduce: the caller keeps peft's path."""


class StackedLora:
    """Takes over the forward of every LoRA Linear of `model` for the adapters `names`; `select(rows)` before each forward."""

    def __init__(self, model, names: list[str]):
        import torch
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer

        self.index = {name: n for n, name in enumerate(names)}
        self.patterns: dict[tuple, tuple] = {}  # a layout (each column's adapter and scale) -> its tensors, shared by its layers
        self.masks: dict[tuple, object] | None = None
        layers = []
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            if not isinstance(module, LoraLinear) or module.lora_variant or getattr(module, "fan_in_fan_out", False):
                raise Unstackable(f"{type(module).__name__} with {sorted(module.lora_variant) or 'no variant'}")
            blocks, owners, scales = [], [], []
            base = module.base_layer.weight
            for name in names:
                if name in module.lora_A:
                    a, b = module.lora_A[name].weight, module.lora_B[name].weight  # r x in, out x r
                    if module.lora_A[name].bias is not None or module.lora_B[name].bias is not None:
                        raise Unstackable(f"{name}: LoRA with a bias")
                    blocks.append((name, a, b))
                    owners += [self.index[name]] * a.shape[0]
                    scales += [float(module.scaling[name])] * a.shape[0]
            if not blocks:
                continue
            pattern = (tuple(owners), tuple(scales))
            if pattern not in self.patterns:
                self.patterns[pattern] = (torch.tensor(owners, device=base.device),
                                          torch.tensor(scales, dtype=base.dtype, device=base.device))
            stacked_a = torch.cat([a.t() for _, a, _ in blocks], dim=1).to(base.dtype).contiguous()
            stacked_b = torch.cat([b.t() for _, _, b in blocks], dim=0).to(base.dtype).contiguous()
            # peft's own weights become views of the stacks: the adapters are held once, not twice
            offset = 0
            for name, a, _ in blocks:
                rank = a.shape[0]
                module.lora_A[name].weight.data = stacked_a[:, offset:offset + rank].t()
                module.lora_B[name].weight.data = stacked_b[offset:offset + rank].t()
                offset += rank
            layers.append((module, stacked_a, stacked_b, pattern))
        for module, stacked_a, stacked_b, pattern in layers:
            module.forward = partial(_forward, module, self, stacked_a, stacked_b, pattern)

    def select(self, adapters: list[str | None]) -> None:
        """The rows of the next forward, by adapter name (None: the base model alone)."""
        import torch

        if all(name is None for name in adapters):
            self.masks = None
            return
        rows = torch.tensor([self.index.get(name, -1) if name is not None else -1 for name in adapters])
        self.masks = {pattern: ((rows.to(owners.device)[:, None] == owners[None, :]) * scales[None, :]).unsqueeze(1)
                      for pattern, (owners, scales) in self.patterns.items()}


def _forward(module, stack: StackedLora, stacked_a, stacked_b, pattern, x, *args, **kwargs):
    result = module.base_layer(x, *args, **kwargs)
    if stack.masks is None:
        return result
    low = (x.to(stacked_a.dtype) @ stacked_a) * stack.masks[pattern]
    return result + (low @ stacked_b).to(result.dtype)
