"""Gradient checkpointing and the largest ViT that fits one device: peak memory and step time of a full
fine-tune (forward, backward, AdamW step) at a fixed batch, with and without ``--gradient-checkpointing``.

The models are ViTs built from their published sizes (random weights: memory and speed do not depend on the
values), so no Hub access is needed. Each (size, checkpointing) pair runs in a fresh process so one size's
allocator state or out-of-memory error cannot leak into the next; a size that runs out of memory is reported
as not fitting. On a GPU: bf16 autocast, ``torch.cuda.max_memory_allocated``; on CPU (the suite's check): fp32
and the process's peak RSS.

    python bench/memory.py --device cuda --batch 32 --sizes base large huge giant --json memory.json
    python bench/memory.py --device cpu --batch 2 --sizes tiny --steps 2   # what the test suite runs
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

# (hidden size, layers, heads, MLP size) of ViT-B/L/H (Dosovitskiy et al.) and a ViT-g-sized model
# (DINOv2-g's width and depth at patch 16); "tiny" is for the CPU test.
VIT_SIZES = {
    "tiny": (64, 2, 2, 128),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
    "giant": (1536, 40, 24, 6144),
}


def build_vit(size: str, image_size: int):
    from transformers import ViTConfig, ViTForImageClassification

    hidden, layers, heads, mlp = VIT_SIZES[size]
    config = ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=mlp, image_size=image_size, patch_size=16, num_labels=1000)
    return ViTForImageClassification(config)


def enable_checkpointing(model) -> None:
    """What ``--gradient-checkpointing`` does to a transformers backbone (hf_transfer.training.arguments)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def measure(size: str, *, checkpointing: bool, device: str, batch: int, steps: int, image_size: int) -> dict:
    """One (size, checkpointing) pair in this process: peak memory and median step time."""
    import torch

    torch.manual_seed(0)
    model = build_vit(size, image_size).to(device).train()
    if checkpointing:
        enable_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    bf16 = device == "cuda"
    times = []
    for step in range(steps + 1):  # the first step (allocator warm-up, kernel choice) is not timed
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    params = sum(p.numel() for p in model.parameters())
    return {"size": size, "checkpointing": checkpointing, "fits": True, "params_m": round(params / 1e6, 1),
            "peak_gib": round(peak / 2**30, 2), "step_s": round(statistics.median(times), 4),
            "images_per_s": round(batch / statistics.median(times), 1)}


def run_isolated(size: str, checkpointing: bool, args) -> dict:
    """``measure`` in a fresh process; out of memory (or any failure) is a row that says so."""
    command = [sys.executable, __file__, "--one", size, "--device", args.device, "--batch", str(args.batch),
               "--steps", str(args.steps), "--image-size", str(args.image_size)]
    if checkpointing:
        command.append("--checkpointing")
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    out_of_memory = "out of memory" in done.stderr.lower()
    return {"size": size, "checkpointing": checkpointing, "fits": False,
            "why": "out of memory" if out_of_memory else tail[:200]}


def summarize(rows: list[dict]) -> dict:
    """The largest size that fits with and without checkpointing, and what checkpointing costs and saves."""
    order = list(VIT_SIZES)
    largest = {}
    for checkpointing in (False, True):
        fitting = [r["size"] for r in rows if r["checkpointing"] == checkpointing and r["fits"]]
        largest["with" if checkpointing else "without"] = max(fitting, key=order.index) if fitting else None
    savings = []
    for size in order:
        pair = {r["checkpointing"]: r for r in rows if r["size"] == size and r["fits"]}
        if len(pair) == 2:
            savings.append({"size": size, "memory_saved": round(1 - pair[True]["peak_gib"] / pair[False]["peak_gib"], 3),
                            "step_time_ratio": round(pair[True]["step_s"] / pair[False]["step_s"], 3)})
    return {"largest_fitting": largest, "checkpointing": savings}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per pair (after one untimed)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sizes", nargs="+", default=["base", "large", "huge", "giant"], choices=list(VIT_SIZES))
    parser.add_argument("--timeout", type=int, default=300, help="seconds per (size, checkpointing) process")
    parser.add_argument("--json", default=None, help="write the rows and summary here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one size here
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, checkpointing=args.checkpointing, device=args.device, batch=args.batch,
                                 steps=args.steps, image_size=args.image_size)))
        return {}
    rows = []
    for size in args.sizes:
        for checkpointing in (False, True):
            rows.append(run_isolated(size, checkpointing, args))
            print(json.dumps(rows[-1]), flush=True)
    report = {"device": args.device, "batch": args.batch, "image_size": args.image_size, "rows": rows,
              "summary": summarize(rows)}
    print(json.dumps(report["summary"]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
