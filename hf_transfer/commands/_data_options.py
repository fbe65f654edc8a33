"""The data options shared by commands that read labelled images without training (rank, curve).

They are the :class:`~hf_transfer.config.DataConfig` fields that say where the images and labels are, with
the same names, defaults and help as in ``hf-transfer train``.
"""

from __future__ import annotations

import dataclasses
import typing

from hf_transfer.config import DataConfig

WHERE_FIELDS = ("data", "data_config_name", "data_revision", "train_split", "validation_split", "test_split",
                "image_column", "label_column", "on_bad_image")


def add_data_options(parser) -> None:
    hints = typing.get_type_hints(DataConfig)
    for field in dataclasses.fields(DataConfig):
        if field.name not in WHERE_FIELDS:
            continue
        choices = typing.get_args(hints[field.name]) if typing.get_origin(hints[field.name]) is typing.Literal else None
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, required=field.name == "data",
                            default=field.default, choices=choices, help=field.metadata["help"])


def data_config_from(args) -> DataConfig:
    return DataConfig(**{name: getattr(args, name) for name in WHERE_FIELDS})
