"""int8 ONNX against fp32 on a run's test split: accuracy, and CPU latency per image at batch 1 and batch 32.

Takes a run folder and its export (``hf-transfer export --format onnx --quantize int8``). Every engine gets the
same pixels (the checkpoint's processor, once), so the numbers compare the graphs alone:

* accuracy of onnxruntime int8, onnxruntime fp32 and torch fp32 on the run's test split (its run_config.yaml
  names the data), and int8's top-label agreement with fp32;
* latency per image, median over rounds, at batch 1 and batch 32. The engines run **interleaved**, one call each
  per round in rotating order, so a load spike from other work on the machine hits all of them alike; the
  int8 speed-up is the median of the per-round fp32/int8 ratios (pair by pair), and the load average before and
  after is recorded next to the times.

    hf-transfer export --model RUN --format onnx --quantize int8 --output-dir RUN-onnx
    python bench/int8.py --run RUN --export RUN-onnx --json bench/int8.json --markdown -
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = ("onnxruntime int8", "onnxruntime fp32", "torch fp32")
BATCH_SIZES = (1, 32)


def test_pixels(run: Path, processor, *, limit: int | None, data: str | None = None
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pixels and model-space label ids of the test split (validation when there is none) of ``data``, by default
    the data the run trained on (its run_config.yaml)."""
    from hf_transfer import run_folder
    from hf_transfer.config import DataConfig, RunConfig
    from hf_transfer.data.images import load_image
    from hf_transfer.data.loading import load_splits
    from hf_transfer.evaluation.onnx_model import processor_pixels

    data = DataConfig(data=data) if data else RunConfig.from_yaml(run / run_folder.CONFIG_FILE).data
    splits, report = load_splits(data)
    name = "test" if "test" in splits else "validation"
    split = splits[name].select(range(min(limit or len(splits[name]), len(splits[name]))))
    model_labels = run_folder.read_label_names(run)
    to_model = np.array([model_labels.index(label) for label in report.label_names])
    pixels = np.concatenate([processor_pixels(processor, [load_image(r["image"]) for r in split.select(range(i, min(i + 32, len(split))))])
                             for i in range(0, len(split), 32)])
    return pixels, to_model[np.asarray(split["label"])], {"data": data.data, "split": name, "images": len(split)}


def engines(run: Path, export: Path, *, threads: int):
    """``{name: pixels -> logits}`` for the three engines, all on ``threads`` CPU threads."""
    import torch

    from hf_transfer.evaluation.inference import load_classifier
    from hf_transfer.evaluation.onnx_model import INT8_FILE, ONNX_FILE, onnx_session, run_logits

    torch.set_num_threads(threads)
    classifier = load_classifier(str(run), device="cpu")
    int8, fp32 = (onnx_session(export / name, threads=threads) for name in (INT8_FILE, ONNX_FILE))

    def torch_logits(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return classifier.model(pixel_values=torch.from_numpy(pixels)).logits.float().numpy()

    return classifier.processor, {"onnxruntime int8": lambda p: run_logits(int8, p),
                                  "onnxruntime fp32": lambda p: run_logits(fp32, p), "torch fp32": torch_logits}


def accuracy(run_engines: dict, pixels: np.ndarray, labels: np.ndarray) -> dict:
    logits = {name: np.concatenate([run(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
              for name, run in run_engines.items()}
    top = {name: values.argmax(1) for name, values in logits.items()}
    return {"accuracy": {name: float((predicted == labels).mean()) for name, predicted in top.items()},
            "int8_agrees_with_fp32": float((top["onnxruntime int8"] == top["onnxruntime fp32"]).mean())}


def latency(run_engines: dict, pixels: np.ndarray, *, batch: int, rounds: int) -> dict:
    """Median ms per image for each engine, interleaved: one call per engine per round, in rotating order."""
    inputs = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])), dtype=np.float32)
    names = list(run_engines)
    for name in names:  # warm-up: first-call allocations and graph set-up are not per-image costs
        run_engines[name](inputs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            started = time.perf_counter()
            run_engines[name](inputs)
            times[name].append((time.perf_counter() - started) * 1000 / batch)
    result = {name: {"median_ms_per_image": statistics.median(values), "min_ms_per_image": min(values),
                     "rounds": len(values), "ms_per_image": [round(v, 3) for v in values]} for name, values in times.items()}
    # Pair by pair: int8 and fp32 ran back to back in each round, under the same load; the median of the per-round
    # ratios is the speed-up least moved by other work on the machine.
    paired = [fp32 / int8 for fp32, int8 in zip(times["onnxruntime fp32"], times["onnxruntime int8"])]
    result["paired_speedup_int8_over_fp32"] = statistics.median(paired)
    return result


def run_bench(run: Path, export: Path, *, rounds: int, threads: int, limit: int | None = None,
              data: str | None = None) -> dict:
    processor, run_engines = engines(run, export, threads=threads)
    pixels, labels, data = test_pixels(run, processor, limit=limit, data=data)
    report = json.loads((export / "export_report.json").read_text()).get("int8", {})
    load_before = os.getloadavg()
    result = {"run": str(run), "export": str(export), "data": data, "threads": threads, "cpu_count": os.cpu_count(),
              "calibration": report.get("calibration"), "int8_settings": {k: report.get(k) for k in
                                                                        ("format", "weights", "op_types", "kept_fp32")},
              **accuracy(run_engines, pixels, labels),
              "latency": {str(batch): latency(run_engines, pixels, batch=batch, rounds=rounds) for batch in BATCH_SIZES},
              "sizes_mb": {"int8": _mb(export / "model_int8.onnx"), "fp32": _mb(export / "model.onnx")}}
    result["load_average_1min"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
    return result


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def _speedup(latencies: dict) -> float:
    """Paired (per-round) when the result has it; results written before it had the ratio of the medians."""
    if "paired_speedup_int8_over_fp32" in latencies:
        return latencies["paired_speedup_int8_over_fp32"]
    return latencies["onnxruntime fp32"]["median_ms_per_image"] / latencies["onnxruntime int8"]["median_ms_per_image"]


def markdown_table(result: dict) -> str:
    """The result as a Markdown table: one row per engine (accuracy, ms/image at each batch size), then notes."""
    data, load = result["data"], result["load_average_1min"]
    lines = [f"| engine | {data['split']} accuracy ({data['images']} images) | "
             + " | ".join(f"ms/image, batch {b}" for b in BATCH_SIZES) + " |",
             "|---|---|" + "---|" * len(BATCH_SIZES)]
    for name in ENGINES:
        times = " | ".join(f"{result['latency'][str(b)][name]['median_ms_per_image']:.2f}" for b in BATCH_SIZES)
        lines.append(f"| {name} | {100 * result['accuracy'][name]:.1f} % | {times} |")
    diff = 100 * (result["accuracy"]["onnxruntime int8"] - result["accuracy"]["onnxruntime fp32"])
    speed = {b: _speedup(result["latency"][str(b)]) for b in BATCH_SIZES}
    calibration = result.get("calibration") or {}
    lines += ["", f"Data {data['data']}; int8 − fp32 accuracy: {diff:+.1f} points; int8 keeps fp32's top label on "
              f"{100 * result['int8_agrees_with_fp32']:.1f} % of the images; int8 speed-up over onnxruntime fp32 ("
              + ("median of per-round ratios" if "paired_speedup_int8_over_fp32" in result["latency"]["1"]
                 else "ratio of medians") + "): "
              + ", ".join(f"{speed[b]:.2f}x at batch {b}" for b in BATCH_SIZES)
              + f". Files: int8 {result['sizes_mb']['int8']} MB, fp32 {result['sizes_mb']['fp32']} MB. Calibrated on "
              f"{calibration.get('images', '?')} {calibration.get('split', '?')} images. {result['threads']} threads "
              f"on {result['cpu_count']} cores, engines interleaved; load average {load['before']} before, "
              f"{load['after']} after (a shared machine)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="Run folder (its run_config.yaml names the data).")
    parser.add_argument("--export", required=True, type=Path, help="Its export with --quantize int8.")
    parser.add_argument("--rounds", type=int, default=20, help="Timed calls per engine and batch size.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of every engine.")
    parser.add_argument("--limit", type=int, default=None, help="At most this many test images (the suite's check).")
    parser.add_argument("--data", default=None, help="Data to score (default: the run's, from its run_config.yaml).")
    parser.add_argument("--json", default=None, help="Write the result here.")
    parser.add_argument("--markdown", default=None, help="Write the table here ('-': print it).")
    args = parser.parse_args(argv)
    result = run_bench(args.run, args.export, rounds=args.rounds, threads=args.threads, limit=args.limit,
                       data=args.data)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(result)
    if args.markdown == "-":
        print(table)
    elif args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
