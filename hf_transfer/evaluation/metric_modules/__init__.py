"""hf_transfer's evaluate metric modules (accuracy, f1, top_k_accuracy, ece), loadable offline.

Each ``<name>/<name>.py`` is an ``evaluate.Metric``: ``hf_transfer.load_metric(name)`` instantiates it, and
``evaluate.load("<this folder>/<name>")`` loads the same script by path, with no download.
"""
