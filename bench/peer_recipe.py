"""The documented transformers recipe, whole: the image-classification tutorial as one script (bench/scale.py's peer).

It follows https://huggingface.co/docs/transformers/tasks/image_classification step by step: ``load_dataset(
"imagefolder")``, ``train_test_split(test_size=0.2)``, torchvision ``RandomResizedCrop/ToTensor/Normalize`` through
``with_transform`` (on both splits, as the tutorial does), ``DefaultDataCollator``, ``Trainer`` evaluating and saving
every epoch with ``load_best_model_at_end`` on accuracy. Two changes, both for this offline machine: accuracy is
computed with numpy (``evaluate.load("accuracy")`` downloads its script) and the checkpoint is a local folder.

    python bench/peer_recipe.py --model CHECKPOINT --data FOLDER --output-dir OUT --epochs 2 --batch-size 8
"""

from __future__ import annotations

import argparse

import numpy as np
from datasets import load_dataset
from torchvision.transforms import Compose, Normalize, RandomResizedCrop, ToTensor
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    DefaultDataCollator,
    Trainer,
    TrainingArguments,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    data = load_dataset("imagefolder", data_dir=args.data, split="train").train_test_split(test_size=0.2, seed=0)
    labels = data["train"].features["label"].names
    processor = AutoImageProcessor.from_pretrained(args.model)
    size = (processor.size["shortest_edge"] if "shortest_edge" in processor.size
            else (processor.size["height"], processor.size["width"]))
    augment = Compose([RandomResizedCrop(size), ToTensor(), Normalize(mean=processor.image_mean,
                                                                       std=processor.image_std)])

    def transforms(examples):
        examples["pixel_values"] = [augment(image.convert("RGB")) for image in examples["image"]]
        del examples["image"]
        return examples

    data = data.with_transform(transforms)
    model = AutoModelForImageClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, ignore_mismatched_sizes=True)

    def compute_metrics(prediction):
        return {"accuracy": float(np.mean(np.argmax(prediction.predictions, axis=1) == prediction.label_ids))}

    training_args = TrainingArguments(
        output_dir=args.output_dir, remove_unused_columns=False, eval_strategy="epoch", save_strategy="epoch",
        learning_rate=5e-5, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs, warmup_steps=0.1, logging_steps=10, load_best_model_at_end=True,
        metric_for_best_model="accuracy", report_to="none",
    )
    trainer = Trainer(model=model, args=training_args, data_collator=DefaultDataCollator(),
                      train_dataset=data["train"], eval_dataset=data["test"], processing_class=processor,
                      compute_metrics=compute_metrics)
    trainer.train()
    trainer.save_model()
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
