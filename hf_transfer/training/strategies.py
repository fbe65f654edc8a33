"""What to train: one registry, every entry the same small shape.

``linear`` (frozen backbone, new head), ``full`` (everything, optionally with layer-wise LR decay) and the
peft methods (LoRA, DoRA, LoHa, LoKr, IA3, OFT, BOFT, VeRA, FourierFT, HRA, AdaLoRA). Adapter targets are
chosen per architecture from the layers that exist (transformers 5 renamed ViT's attention to
``q_proj/k_proj/v_proj/o_proj``; conv backbones have no Linear layer but the head), and the head is
always trained and saved (``modules_to_save``). A method that cannot apply says why and what to use.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from hf_transfer.config import StrategyConfig, short_float
from hf_transfer.errors import StrategyError
from hf_transfer.modeling.heads import find_head_names, in_head
from hf_transfer.modeling.loading import count_parameters
from hf_transfer.training.callbacks import AdaLoraBudget


@dataclass(frozen=True)
class Strategy:
    """One way to adapt a checkpoint, and everything the run needs to know about it.

    Code outside this module asks these fields instead of comparing strategy names, so a new entry is one
    ``register`` call. ``peft_config`` builds the peft config from the chosen targets (None: no adapter).
    """

    name: str
    description: str
    default_learning_rate: float
    layer_types: tuple[type, ...] = ()
    peft_config: Callable[..., Any] | None = None
    needs_total_steps: bool = False  # the peft config schedules itself over the run (AdaLoRA's rank budget)
    uses_rank: bool = False  # --lora-r sets this method's rank
    # Adapt only the attention query/value projections by default (transformers ones), not every Linear layer:
    # measured, adapters on the MLP and the other projections cost more step time than full fine-tuning saves
    # (bench/RESULTS.md, "LoRA targets"). Models without such projections fall back to every Linear layer.
    query_value_targets: bool = False
    frozen_backbone: bool = False  # only the head trains (linear probe)
    # --augment when not given. "none" on a frozen backbone sends the run to the cached-feature probe
    # (training/cached_probe.py): the backbone then runs once per image instead of once per image per epoch.
    default_augment: str = "light"
    # Under DDP, parameters that get no gradient (e.g. DINOv2's mask token) must be searched for every step;
    # only worth its cost when every weight trains.
    ddp_find_unused_parameters: bool = False
    supports_layer_decay: bool = False  # --layer-decay spreads learning rates over the trained backbone blocks
    callback_types: tuple[type, ...] = ()  # Trainer callbacks this method needs (built fresh for each run)

    @property
    def is_peft(self) -> bool:
        return self.peft_config is not None

    def callbacks(self) -> list:
        """Fresh instances of the Trainer callbacks this strategy needs."""
        return [callback() for callback in self.callback_types]

    def layers_adapted(self) -> str:
        """Which layers get an adapter (or, without one, which weights train), in words."""
        if self.query_value_targets:
            return "query/value Linear, Conv2d"
        if self.layer_types:
            return ", ".join(t.__name__ for t in self.layer_types)
        return "none (new head only)" if self.frozen_backbone else "all (every weight)"


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    if strategy.name in REGISTRY:
        raise StrategyError(f"A strategy named {strategy.name!r} is already registered.")
    REGISTRY[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The registry entry of ``name``; an unknown name is an error that names the closest one."""
    key = name.lower().strip()
    if key not in REGISTRY:
        close = difflib.get_close_matches(key, list(REGISTRY), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise StrategyError(f"Unknown strategy {name!r}.{hint} Choose one of: {', '.join(REGISTRY)} "
                            "(`hf-transfer strategies` describes them).")
    return REGISTRY[key]


# ------------------------------------------------------------------------------------------ peft builders

def _lora(targets, heads, cfg: StrategyConfig, extra, *, dora: bool = False, **_):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or cfg.lora_r, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, modules_to_save=heads, use_dora=dora, **extra)


def _loha(targets, heads, cfg, extra, **_):
    from peft import LoHaConfig

    return LoHaConfig(r=cfg.lora_r, alpha=cfg.lora_alpha or cfg.lora_r, target_modules=targets,
                      modules_to_save=heads, **extra)


def _lokr(targets, heads, cfg, extra, **_):
    from peft import LoKrConfig

    return LoKrConfig(r=cfg.lora_r, alpha=cfg.lora_alpha or cfg.lora_r, target_modules=targets,
                      modules_to_save=heads, **extra)


def _ia3(targets, heads, cfg, extra, **_):
    from peft import IA3Config

    return IA3Config(target_modules=targets, feedforward_modules=[], modules_to_save=heads, **extra)


def _blocked_targets(model, targets, preferred=(32, 16, 8, 4, 2)) -> tuple[int, list[str]]:
    """OFT/BOFT rotate blocks of a weight's input dimension: pick the largest block size that divides the
    input size of the targets, leaving out layers no block size fits (e.g. an RGB stem, 3 x 7 x 7 = 147)."""
    dims = {}
    for name, module in model.named_modules():
        if name in targets:
            dims[name] = (module.in_features if isinstance(module, nn.Linear) else
                          module.in_channels * module.kernel_size[0] * module.kernel_size[1])
    if not dims:  # user-given suffixes/regex: let peft resolve them
        return preferred[-1], targets
    fitting = {n: d for n, d in dims.items() if d % preferred[-1] == 0}
    for size in preferred:
        if fitting and all(d % size == 0 for d in fitting.values()):
            return size, [n for n in targets if n in fitting]
    raise StrategyError("No layer has an input size divisible by 2, so orthogonal blocks cannot be formed. "
                        "Use --strategy lora.")


def _oft(targets, heads, cfg, extra, *, model, **_):
    from peft import OFTConfig

    block, targets = _blocked_targets(model, targets)
    extra = {"r": 0, "oft_block_size": block, **extra}
    return OFTConfig(target_modules=targets, modules_to_save=heads, **extra)


def _boft(targets, heads, cfg, extra, *, model, **_):
    from peft import BOFTConfig

    block, targets = _blocked_targets(model, targets, (8, 4, 2))
    extra = {"boft_block_size": block, "boft_n_butterfly_factor": 1, **extra}
    return BOFTConfig(target_modules=targets, modules_to_save=heads, **extra)


def _vera(targets, heads, cfg, extra, **_):
    from peft import VeraConfig

    return VeraConfig(r=max(cfg.lora_r, 64), target_modules=targets, modules_to_save=heads, **extra)


def _fourierft(targets, heads, cfg, extra, *, model, **_):
    from peft import FourierFTConfig

    smallest = min(m.in_features * m.out_features for n, m in model.named_modules() if n in targets)
    return FourierFTConfig(n_frequency=min(1000, smallest), target_modules=targets, modules_to_save=heads, **extra)


def _hra(targets, heads, cfg, extra, **_):
    from peft import HRAConfig

    return HRAConfig(r=max(2, cfg.lora_r // 2 * 2), target_modules=targets, modules_to_save=heads, **extra)


def _adalora(targets, heads, cfg, extra, *, total_steps=None, **_):
    from peft import AdaLoraConfig

    steps = max(int(total_steps or 100), 10)
    return AdaLoraConfig(init_r=cfg.lora_r, target_r=max(1, cfg.lora_r // 2), lora_alpha=cfg.lora_alpha or cfg.lora_r,
                         total_step=steps, tinit=max(1, steps // 10), tfinal=max(1, steps // 5), deltaT=1,
                         target_modules=targets, modules_to_save=heads, **extra)


LINEAR_AND_CONV = (nn.Linear, nn.Conv2d)
LINEAR_ONLY = (nn.Linear,)
PEFT_LEARNING_RATE = 5e-4


def _peft(name: str, description: str, build: Callable[..., Any], *, layers: tuple[type, ...] = LINEAR_AND_CONV,
          learning_rate: float = PEFT_LEARNING_RATE, **fields: Any) -> Strategy:
    return Strategy(name, description, learning_rate, layers, build, **fields)


for _strategy in (
    Strategy("linear", "Frozen pretrained backbone, new head (linear probe). Fast, robust with few examples.", 1e-3,
             frozen_backbone=True, default_augment="none"),
    Strategy("full", "Train every weight (optionally --layer-decay). Best with many examples; most memory.", 5e-5,
             ddp_find_unused_parameters=True, supports_layer_decay=True),
    _peft("lora", "LoRA adapters on the attention query/value projections (Conv2d on conv backbones) + head.",
          _lora, uses_rank=True, query_value_targets=True),
    _peft("dora", "DoRA: weight-decomposed LoRA (magnitude + direction). Often closer to full fine-tuning.",
          lambda *a, **k: _lora(*a, dora=True, **k), uses_rank=True, query_value_targets=True),
    _peft("loha", "LoHa: low-rank Hadamard-product adapters.", _loha, uses_rank=True),
    _peft("lokr", "LoKr: low-rank Kronecker-product adapters.", _lokr, uses_rank=True),
    _peft("ia3", "IA3: learned rescaling vectors; the fewest trainable parameters.", _ia3, learning_rate=3e-3),
    _peft("oft", "OFT: orthogonal fine-tuning (block-diagonal rotations of weights).", _oft),
    _peft("boft", "BOFT: butterfly-factorised orthogonal fine-tuning.", _boft),
    _peft("vera", "VeRA: shared random low-rank matrices with trained scaling vectors (Linear layers only).", _vera,
          layers=LINEAR_ONLY, learning_rate=5e-3, uses_rank=True),
    _peft("fourierft", "FourierFT: trains a few spectral coefficients per weight (Linear layers only).", _fourierft,
          layers=LINEAR_ONLY, learning_rate=5e-3),
    _peft("hra", "HRA: Householder-reflection adaptation.", _hra, uses_rank=True),
    _peft("adalora", "AdaLoRA: LoRA whose rank is reallocated during training (Linear layers only).", _adalora,
          layers=LINEAR_ONLY, uses_rank=True, needs_total_steps=True, callback_types=(AdaLoraBudget,)),
):
    register(_strategy)


def strategy_table_text() -> str:
    """``hf-transfer strategies``: one aligned row per registry entry (name, default lr, layers, rank, description)."""
    header = ("strategy", "default lr", "layers adapted", "rank", "description")
    rows = [header] + [(s.name, short_float(s.default_learning_rate), s.layers_adapted(),
                        "--lora-r" if s.uses_rank else "-", s.description) for s in REGISTRY.values()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows]
    return "\n".join(lines)


def strategy_table_markdown() -> str:
    """The README's strategy table, generated from the registry (a test compares the README with it)."""
    rows = ["| strategy | what it trains | default learning rate | layers adapted |", "|---|---|---|---|"]
    for strategy in REGISTRY.values():
        rows.append(f"| `{strategy.name}` | {strategy.description} | {short_float(strategy.default_learning_rate)} | "
                    f"{strategy.layers_adapted()} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------------ targets

# Attention query/value projections as transformers 5 (q_proj/v_proj), Swinv2/MobileViT (query/value) and timm
# (one fused qkv projection: one adapter covers query, key and value) name them.
QUERY_VALUE_NAMES = frozenset({"q_proj", "v_proj", "query", "value", "qkv"})


def find_target_modules(model: nn.Module, strategy: Strategy, heads: list[str]) -> list[str]:
    """Full names of the layers to adapt: backbone Linear layers (only the attention query/value projections for
    the strategies that ask, when the model has them); on conv-only backbones, Conv2d (groups=1)."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not in_head(n, heads)]
    query_value = [n for n in linears if n.rsplit(".", 1)[-1] in QUERY_VALUE_NAMES]
    if strategy.query_value_targets and query_value:
        return query_value
    if linears:
        return linears
    convs = [n for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.groups == 1 and not in_head(n, heads)]
    arch = type(model).__name__
    whole_model = "/".join(s.name for s in REGISTRY.values() if not s.is_peft)
    if not convs:
        raise StrategyError(f"{arch} has neither Linear nor (non-depthwise) Conv2d layers outside its head: no "
                            f"adapter can attach. Use --strategy {whole_model}.")
    if nn.Conv2d not in strategy.layer_types:
        conv_capable = [s.name for s in REGISTRY.values() if nn.Conv2d in s.layer_types]
        raise StrategyError(
            f"{strategy.name} adapts Linear layers only, and {arch} has no Linear layer besides its head (it is a "
            f"convolutional backbone). Use {', '.join(conv_capable[:-1])} or {conv_capable[-1]} (they adapt "
            f"Conv2d), or --strategy {whole_model}."
        )
    return convs


def _parse_targets(spec: str) -> str | list[str]:
    if any(ch in spec for ch in "*[]()|^$\\"):
        return spec  # a regex, as peft understands it
    return [part.strip() for part in spec.split(",") if part.strip()]


# ------------------------------------------------------------------------------------------------- apply

@dataclass
class AppliedStrategy:
    """The model ready to train plus what the run needs to know about it."""

    model: nn.Module
    strategy: Strategy
    head_names: list[str]
    trainable_params: int
    total_params: int
    target_modules: Any = None

    def summary(self) -> str:
        share = 100.0 * self.trainable_params / max(self.total_params, 1)
        return (f"strategy {self.strategy.name}: trainable params {self.trainable_params:,} || all params "
                f"{self.total_params:,} || trainable {share:.4f}%")


def apply_strategy(model: nn.Module, cfg: StrategyConfig, *, total_steps: int | None = None) -> AppliedStrategy:
    """Freeze / wrap ``model`` for ``cfg.strategy``; the head is always trainable."""
    cfg.validate()
    strategy = get_strategy(cfg.strategy)
    heads = find_head_names(model)
    if cfg.layer_decay is not None and not strategy.supports_layer_decay:
        allowed = " or ".join(s.name for s in REGISTRY.values() if s.supports_layer_decay)
        raise StrategyError(f"--layer-decay applies to --strategy {allowed} only (got {strategy.name}).")
    if strategy.is_peft:
        return _apply_peft(model, strategy, cfg, heads, total_steps=total_steps)
    for name, param in model.named_parameters():
        param.requires_grad = in_head(name, heads) or not strategy.frozen_backbone
    if strategy.frozen_backbone:
        freeze_frozen_statistics(model)
    return _applied(model, strategy, heads)


def saved_head_modules(model: nn.Module, heads: list[str]) -> list[str]:
    """The head modules peft saves in full (``modules_to_save``): each head that holds weights itself, else its
    descendants that do. A container head (HF ResNet's ``classifier`` = Sequential(Flatten, Linear)) is unwrapped:
    the LyCORIS and IA3 tuners' merge copies ``.weight`` from every saved module and fail on a container."""
    names = []
    for head in heads:
        module = model.get_submodule(head)
        if any(True for _ in module.parameters(recurse=False)) or not any(True for _ in module.children()):
            names.append(head)
        else:
            names += [f"{head}.{n}" for n, m in module.named_modules()
                      if n and any(True for _ in m.parameters(recurse=False))]
    return names


def _apply_peft(model: nn.Module, strategy: Strategy, cfg: StrategyConfig, heads: list[str], *,
                total_steps: int | None) -> AppliedStrategy:
    """Wrap ``model`` with the strategy's peft adapter on the chosen targets; the head is saved with it."""
    from peft import get_peft_model

    targets = _parse_targets(cfg.target_modules) if cfg.target_modules else find_target_modules(model, strategy, heads)
    try:
        extra = json.loads(cfg.peft_options) if cfg.peft_options else {}
    except json.JSONDecodeError as error:
        raise StrategyError(f"--peft-options is not valid JSON ({error}): {cfg.peft_options!r}") from error
    try:
        peft_config = strategy.peft_config(targets, saved_head_modules(model, heads), cfg, extra, model=model,
                                           total_steps=total_steps)
        peft_model = get_peft_model(model, peft_config)
    except (ValueError, TypeError, RuntimeError, NotImplementedError, StopIteration) as error:
        raise StrategyError(
            f"{strategy.name} cannot be applied to {type(model).__name__} with targets "
            f"{_short(targets)}: {error}. Try --strategy lora (works on Linear and Conv2d layers), set "
            "--target-modules, or pass method options with --peft-options."
        ) from error
    # The adapter holds only adapter + head weights: BatchNorm statistics drifting in the frozen base would make
    # the saved adapter disagree with the trained model, so frozen BatchNorm layers stay in eval mode.
    freeze_frozen_statistics(peft_model, only=(nn.modules.batchnorm._BatchNorm,))
    applied = _applied(peft_model, strategy, heads)
    applied.target_modules = targets
    return applied


def _short(targets: Any) -> str:
    if isinstance(targets, list) and len(targets) > 6:
        return f"[{', '.join(targets[:6])}, ... {len(targets)} in all]"
    return repr(targets)


def _applied(model: nn.Module, strategy: Strategy, heads: list[str]) -> AppliedStrategy:
    trainable, total = count_parameters(model)
    return AppliedStrategy(model, strategy, heads, trainable, total)


def freeze_frozen_statistics(model: nn.Module, *, only: tuple[type, ...] | None = None) -> None:
    """Keep fully frozen sub-modules in eval mode during training (BatchNorm statistics, dropout).

    A linear probe must see the same backbone features at train and test time; ``Trainer`` calls
    ``model.train()`` every step, so frozen modules get a ``train`` that always means eval.
    """
    def always_eval(self, mode: bool = True):
        return nn.Module.train(self, False)  # recurses: children (dropout too) follow

    for module in model.modules():
        params = list(module.parameters())
        if only is not None and not isinstance(module, only):
            continue
        if module is not model and params and not any(p.requires_grad for p in params):
            module.train = types.MethodType(always_eval, module)
