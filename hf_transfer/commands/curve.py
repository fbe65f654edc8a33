"""hf-transfer curve: accuracy vs examples per class, pretrained vs the same architecture from scratch."""

from __future__ import annotations

from hf_transfer import run_folder
from hf_transfer.commands._data_options import add_data_options, data_config_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "curve", help="Learning curve: accuracy vs examples per class, pretrained vs random init, over seeds.",
        description="Linear probes on cached features of the pretrained checkpoint and of the same architecture "
                    "with random weights, at each --shots value and seed; optional real LoRA runs at small shot "
                    "counts (--lora-shots). Writes OUT/curve.json and OUT/curve.png.",
    )
    parser.add_argument("--model", required=True, help="Checkpoint: Hub id, local folder, embedded:efficientnet_lite0.")
    parser.add_argument("--shots", nargs="+", default=["1", "2", "5", "10", "all"], metavar="K",
                        help="Training examples per class, or 'all' (default: 1 2 5 10 all).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per point: shot sample and random init (default 3).")
    parser.add_argument("--output-dir", required=True, help="Folder for curve.json and curve.png.")
    parser.add_argument("--lora-shots", nargs="*", type=int, default=[], metavar="K",
                        help="Also fine-tune with LoRA (the train command's code path) at these shot counts; slow.")
    parser.add_argument("--lora-steps", type=int, default=30, help="Optimizer steps per LoRA run (default 30).")
    parser.add_argument("--c-reg", type=float, default=1.0, help="Inverse L2 strength of the linear probe.")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--cache-dir", default=None, help="Feature cache folder (default: $HF_TRANSFER_CACHE/features).")
    add_data_options(parser)
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from pathlib import Path

    from hf_transfer.experiments.curve import learning_curve, verdicts, write_curve

    run_folder.refuse_file(args.output_dir)  # before the work, which would be lost
    data = data_config_from(args)
    curve = learning_curve(data=data, model=args.model, shots=args.shots, seeds=args.seeds, c_reg=args.c_reg,
                           cache_dir=args.cache_dir, batch_size=args.batch_size, lora_shots=args.lora_shots,
                           lora_steps=args.lora_steps, lora_dir=Path(args.output_dir) / "lora_runs", verbose=args.verbose)
    json_path, png_path = write_curve(curve, args.output_dir)
    for line in verdicts(curve):
        print(line)
    lora = curve["summary"].get("pretrained_lora", {})
    for k, s in lora.items():
        print(f"{k} per class: LoRA fine-tune {s['mean']:.1%} +/- {s['std']:.1%}")
    print(f"wrote {json_path} and {png_path}")
    return 0
