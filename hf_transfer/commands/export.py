"""hf-transfer export: a trained model (any strategy, merged) as ONNX, with its preprocessing and labels.

The command checks its own work: onnxruntime's logits against torch's on the run's example images (or a few
synthetic ones), written to OUT/export_report.json and printed. ``--quantize int8`` adds OUT/model_int8.onnx,
calibrated on the run's validation images, and prints how often it keeps fp32's top label.
"""

from __future__ import annotations


def register(subparsers) -> None:
    # No hf_transfer.publish.export import here: it loads torch, and `hf-transfer --help` must stay fast
    # (tests/test_export.py checks that this help lists every format export.FORMATS holds).
    parser = subparsers.add_parser(
        "export", help="Export a trained model to ONNX (dynamic batch) with its preprocessing and labels.",
        description="Export the merged model of a run folder, adapter folder or Hub repo, then check that "
                    "onnxruntime reproduces torch's logits (report in OUT/export_report.json).",
    )
    parser.add_argument("--model", required=True, help="Trained model: run folder, adapter folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model.")
    parser.add_argument("--format", default="onnx", help="Export format; supported: onnx.")
    parser.add_argument("--output-dir", required=True,
                        help="New (or empty) folder for the exported model; an existing export is never overwritten.")
    from hf_transfer.publish import quantize  # numpy only at import: the help's choices and defaults come from it

    parser.add_argument("--quantize", default=None, choices=list(quantize.QUANTIZE_CHOICES),
                        help="Also write model_int8.onnx: static int8 (QDQ, per-channel weights) calibrated on real "
                             "images, checked against fp32 on them (export_report.json: int8).")
    parser.add_argument("--calibration-data", default=None,
                        help="--quantize: images to calibrate on, any --data value of `hf-transfer train` (its "
                             "validation split is used). Default: the data in the run's run_config.yaml.")
    parser.add_argument("--calibration-size", type=int, default=quantize.DEFAULT_CALIBRATION_SIZE,
                        help="--quantize: calibration images, drawn (seeded) from that validation split.")
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.publish.export import ONNX_FILE, REPORT_FILE, export_model, parity_line

    report = export_model(args.model, args.output_dir, format=args.format, revision=args.revision,
                          quantize=args.quantize, calibration_data=args.calibration_data,
                          calibration_size=args.calibration_size)
    parity = report["parity"]
    size_mb = report["size_bytes"] / 1e6
    print(f"exported {args.model} to {args.output_dir}/{ONNX_FILE} ({size_mb:.1f} MB, opset {report['opset']}, "
          f"{len(report['labels'])} labels) in {report['export_seconds']:.1f} s")
    print(f"onnxruntime vs torch on {parity['images']} images ({parity['image_source']}): {parity_line(report)}")
    if "int8" in report:
        from hf_transfer.publish.quantize import agreement_line

        quantized, calibration = report["int8"], report["int8"]["calibration"]
        print(f"int8: {args.output_dir}/{quantized['file']} ({quantized['size_bytes'] / 1e6:.1f} MB) calibrated on "
              f"{calibration['images']} {calibration['split']} images of {calibration['data']} ({calibration['origin']}); "
              f"{agreement_line(quantized['agreement'])}")
    print(f"report: {args.output_dir}/{REPORT_FILE}")
    return 0
