"""The `top_k_accuracy` metric module (the script is top_k_accuracy.py; a folder evaluate.load can take by path)."""
