"""The model step's options, measured: channels_last for conv nets, torch.compile, and the AdamW kernel.

Each compares the same training step (forward, backward, AdamW step) two or three ways, interleaved and
repeated so that machine load hits every variant alike; medians are reported. CPU by default (the suite's
machine); ``--device cuda`` for a GPU (bf16 autocast there).

    OMP_NUM_THREADS=1 python bench/model_step.py --json model_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def clock(device: str) -> float:
    """On CPU with one thread, the thread's CPU time: on a shared, loaded machine wall-clock step times swing
    2-5x with the neighbours' load, CPU time hardly at all. Elsewhere (GPU, several threads) wall-clock."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time()
    return time.perf_counter()


def train_steps(model, optimizer, x, y, steps: int, device: str, bf16: bool) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        start = clock(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        times.append(clock(device) - start)
    return times


def _batch(size: int, batch: int, device: str, num_labels: int = 10):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 3, size, size, generator=g).to(device),
            torch.randint(0, num_labels, (batch,), generator=g).to(device))


def conv_models(device: str):
    """(name, model factory, input size): the embedded real conv checkpoint and a small ConvNeXt."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from hf_transfer.modeling.loading import load_model_for_labels

    def effnet():
        return load_model_for_labels("embedded:efficientnet_lite0", [str(i) for i in range(10)])

    def convnext():
        torch.manual_seed(0)
        return ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2],
                                                             num_labels=10))
    return [("efficientnet_lite0 (embedded)", effnet, 224), ("convnext-atto-sized (random)", convnext, 224)]


def bench_channels_last(args) -> list[dict]:
    from hf_transfer.training.model_step import to_channels_last

    rows = []
    for name, factory, size in conv_models(args.device):
        x, y = _batch(size, args.batch, args.device)
        variants = {}
        for layout in ("contiguous", "channels_last"):
            model = factory().to(args.device).train()
            xin = x
            if layout == "channels_last":
                model = to_channels_last(model)
                xin = x.contiguous(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            train_steps(model, opt, xin, y, args.warmup, args.device, args.bf16)
            variants[layout] = (model, opt, xin)
        samples = {k: [] for k in variants}
        for _ in range(args.repeats):
            for layout, (model, opt, xin) in variants.items():
                samples[layout].append(statistics.median(train_steps(model, opt, xin, y, args.steps, args.device,
                                                                     args.bf16)))
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows.append({"model": name, "input": size, "batch": args.batch, "s_per_step": med, "samples": samples,
                     "channels_last_speedup": med["contiguous"] / med["channels_last"]})
        print(f"channels_last  {name:30} contiguous {med['contiguous']:.3f} s/step  channels_last "
              f"{med['channels_last']:.3f} s/step  speed-up {rows[-1]['channels_last_speedup']:.2f}x", flush=True)
    return rows


def bench_compile(args) -> dict:
    """Tiny ViT: eager vs torch.compile (the Trainer's default inductor backend). Warm-up = first step's time."""
    from transformers import ViTConfig, ViTForImageClassification

    result = {}
    x, y = _batch(args.compile_size, args.batch, args.device)
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = ViTForImageClassification(ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                                                    intermediate_size=768, image_size=args.compile_size,
                                                    num_labels=10)).to(args.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runner = torch.compile(model) if mode == "compiled" else model
        start = time.perf_counter()  # wall-clock: inductor compiles in worker processes too
        first = train_steps(runner, opt, x, y, 2, args.device, args.bf16)  # compiles forward and backward
        warm = time.perf_counter() - start
        steady = [statistics.median(train_steps(runner, opt, x, y, args.steps, args.device, args.bf16))
                  for _ in range(args.repeats)]
        result[mode] = {"first_two_steps_s": warm, "first_steps": first, "steady_s_per_step": statistics.median(steady),
                        "steady_samples": steady}
    e, c = result["eager"], result["compiled"]
    saved = e["steady_s_per_step"] - c["steady_s_per_step"]
    extra = c["first_two_steps_s"] - e["first_two_steps_s"]
    result["break_even_steps"] = (extra / saved) if saved > 0 else None
    print(f"torch.compile  tiny ViT {args.compile_size}px batch {args.batch}: warm-up (2 steps) eager "
          f"{e['first_two_steps_s']:.1f} s, compiled {c['first_two_steps_s']:.1f} s; steady eager "
          f"{e['steady_s_per_step']:.3f} s/step, compiled {c['steady_s_per_step']:.3f} s/step; break-even after "
          f"{result['break_even_steps'] if result['break_even_steps'] is None else round(result['break_even_steps'])}"
          " steps", flush=True)
    return result


def bench_adamw(args) -> dict:
    """The optimizer step alone on a ViT-S-sized parameter set (384 wide, 6 layers: 11 M parameters)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
                                                intermediate_size=1536, image_size=112, num_labels=10)).to(args.device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    kinds = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {k: torch.optim.AdamW(params, lr=1e-4, **kw) for k, kw in kinds.items()}
    samples = {k: [] for k in kinds}
    for opt in opts.values():
        opt.step()
    for _ in range(args.repeats):
        for k, opt in opts.items():
            t = []
            for _ in range(5):
                _sync(args.device)
                s = clock(args.device)
                opt.step()
                _sync(args.device)
                t.append(clock(args.device) - s)
            samples[k].append(statistics.median(t))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print("adamw step     " + "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in med.items()), flush=True)
    return {"params": sum(p.numel() for p in params), "s_per_step": med, "samples": samples}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile-size", type=int, default=64)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--only", default="adamw,channels_last,compile")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here.")
    parts = args.only.split(",")
    result = {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if "adamw" in parts:
        result["adamw"] = bench_adamw(args)
    if "channels_last" in parts:
        result["channels_last"] = bench_channels_last(args)
    if "compile" in parts:
        result["compile"] = bench_compile(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
