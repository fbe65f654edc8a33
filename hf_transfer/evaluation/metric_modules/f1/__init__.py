"""The `f1` metric module (the script is f1.py; a folder evaluate.load can take by path)."""
