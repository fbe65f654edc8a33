"""``hf-transfer inspect``: what is wrong with my data, found on one pass of cached features.

* :mod:`~hf_transfer.inspection.settings`: the thresholds (one dataclass for the command line and Python);
* :mod:`~hf_transfer.inspection.similarity`: near duplicates and outliers from cosine similarity of features;
* :mod:`~hf_transfer.inspection.confident_learning`: out-of-fold probabilities and the confident-learning rule;
* :mod:`~hf_transfer.inspection.findings`: what was found, as records (kind, files, split, score, labels);
* :mod:`~hf_transfer.inspection.report`: inspect.json, inspect.md, the galleries and the clean file;
* :mod:`~hf_transfer.inspection.run`: the whole inspection, stage by stage.

Exact duplicates (the same bytes) come from :mod:`hf_transfer.data.duplicates`, which ``train`` also runs.
"""
