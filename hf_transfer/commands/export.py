"""hf-transfer export: a trained model (any strategy, merged) as ONNX, with its preprocessing and labels.

The command checks its own work: onnxruntime's logits against torch's on the run's example images (or a few
synthetic ones), written to OUT/export_report.json and printed.
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
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.publish.export import ONNX_FILE, REPORT_FILE, export_model, parity_line

    report = export_model(args.model, args.output_dir, format=args.format, revision=args.revision)
    parity = report["parity"]
    size_mb = report["size_bytes"] / 1e6
    print(f"exported {args.model} to {args.output_dir}/{ONNX_FILE} ({size_mb:.1f} MB, opset {report['opset']}, "
          f"{len(report['labels'])} labels) in {report['export_seconds']:.1f} s")
    print(f"onnxruntime vs torch on {parity['images']} images ({parity['image_source']}): {parity_line(report)}")
    print(f"report: {args.output_dir}/{REPORT_FILE}")
    return 0
