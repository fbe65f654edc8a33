"""The feature pass's fast model: BatchNorms folded only where that keeps the outputs, CPU layout and batch size."""

from __future__ import annotations

import types

import pytest
import torch
from tiny import build_model
from torch import nn

from hf_transfer.modeling.fast_inference import CPU_INFERENCE_BATCH, fold_batch_norms, inference_layout


def _with_real_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine weights: a folded norm that went wrong shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_conv_norm_pairs_are_folded_and_the_outputs_kept():
    model = _with_real_statistics(build_model("resnet"))
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        folded = fold_batch_norms(model, torch.randn(1, 3, 32, 32))
        after = folded(pixel_values=pixels).logits
    assert _norms(folded) == 0  # every norm of the HF ResNet follows its conv
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert folded is model  # in place: the feature pass owns the model it loaded (a copy cost as much as the fold)


class _ConvOutputUsedTwice(nn.Module):
    """conv → norm, and the conv's output also added to the norm's: folding the norm would change that sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, pixel_values):
        y = self.conv(pixel_values)
        return types.SimpleNamespace(logits=(self.norm(y) + y).mean((2, 3)))


def test_a_conv_output_that_feeds_two_layers_is_left_alone():
    """The fold is tried (conv and norm each ran once, the norm on the conv's output), the trial batch shows the
    sum changed, and the model gets its own modules back: the same outputs as before."""
    model = _with_real_statistics(_ConvOutputUsedTwice())
    conv, norm = model.conv, model.norm
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(pixels).logits
        assert fold_batch_norms(model, torch.randn(1, 3, 16, 16)) is model
        assert model.conv is conv and model.norm is norm
        torch.testing.assert_close(model(pixels).logits, before, rtol=0, atol=0)


def test_on_cpu_conv_nets_get_channels_last_and_small_batches_elsewhere_nothing_changes():
    conv, _ = inference_layout(_with_real_statistics(build_model("resnet")), "cpu", 64, image_size=(32, 32))
    weights = [m.weight for m in conv.modules() if isinstance(m, nn.Conv2d)]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert inference_layout(conv, "cpu", 64)[1] == CPU_INFERENCE_BATCH["conv"]
    assert inference_layout(conv, "cpu", 2)[1] == 2  # never larger than asked
    vit = build_model("vit").eval()
    assert inference_layout(vit, "cpu", 64) == (vit, CPU_INFERENCE_BATCH["other"])
    assert inference_layout(vit, "cuda", 64) == (vit, 64)  # the device type decides; no GPU needed to check
    # a trial forward pass that cannot run (here: the wrong input size) leaves the model as it is
    resnet = _with_real_statistics(build_model("resnet"))
    assert fold_batch_norms(resnet, torch.randn(1, 5, 32, 32)) is resnet


@pytest.mark.parametrize("arch", ["resnet", "timm_resnet"])
def test_cached_features_of_a_conv_net_match_the_model_as_loaded(arch, tiny_checkpoints, image_folder, tmp_path):
    """End to end: the feature pass (folded, channels_last, batches of 4) against a plain forward pass."""
    from hf_transfer.config import DataConfig
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.inference import predict_logits
    from hf_transfer.modeling.loading import load_processor
    from hf_transfer.transferability.features import _load_pretrained_with_own_head, extract_features

    checkpoint = str(tiny_checkpoints(arch))
    splits, _ = load_splits(DataConfig(data=str(image_folder), check_images=False))
    fs = extract_features(model=checkpoint, dataset=splits["train"], cache_dir=tmp_path)
    plain, _, _ = _load_pretrained_with_own_head(checkpoint, None, False)
    logits, features = predict_logits(plain.eval(), load_processor(checkpoint), splits["train"], batch_size=64,
                                      head_inputs=True)
    torch.testing.assert_close(torch.from_numpy(fs.features), torch.from_numpy(features), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(fs.source_probs), torch.from_numpy(logits).softmax(-1),
                               rtol=1e-4, atol=1e-5)
