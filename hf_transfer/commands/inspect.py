"""hf-transfer inspect: what is wrong with my data (duplicates, leakage, label errors, ...), before any training."""

from __future__ import annotations

import dataclasses
import typing

from hf_transfer import run_folder
from hf_transfer.commands._data_options import add_data_options, data_config_from
from hf_transfer.inspection.settings import InspectConfig


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="Find duplicates, train/test leakage, likely label errors, outliers and small images.",
        description="Embeds every image once (features are cached) and writes OUT/inspect.json, OUT/inspect.md and a "
                    "gallery PNG per kind found; prints one line per kind. Never moves or deletes your files: "
                    "--write-clean writes a list without the flagged images for you to train on.",
    )
    parser.add_argument("--output-dir", required=True, help="Folder for inspect.json, inspect.md and the galleries.")
    parser.add_argument("--record-in", default=None, metavar="RUN_DIR",
                        help="A finished training run whose model card and Space page should show these counts.")
    hints = typing.get_type_hints(InspectConfig)
    for field in dataclasses.fields(InspectConfig):
        kind = typing.get_args(hints[field.name])[0] if typing.get_origin(hints[field.name]) else hints[field.name]
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=kind, default=field.default,
                            help=field.metadata["help"])
    add_data_options(parser)
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.inspection.report import record_inspection
    from hf_transfer.inspection.run import inspect_data

    run_folder.refuse_file(args.output_dir)  # before the work, which would be lost
    settings = InspectConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(InspectConfig)})
    report = inspect_data(data_config_from(args), settings, args.output_dir)
    for line in report.lines():
        print(line)
    for note in report.summary["notes"]:
        print(f"note: {note}")
    if "clean" in report.paths:
        print(f"wrote {report.paths['clean']}: the training and validation images without the flagged ones")
    if args.record_in:
        print(f"recorded the counts in {record_inspection(report.summary, args.record_in)}")
    print(f"wrote {report.paths['json']} and {report.paths['markdown']}")
    return 0
