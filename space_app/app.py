"""Try a transferred image classifier in the browser (the Gradio app of an hf_transfer Space).

    python app.py --model OUT            # a run's --output-dir, its adapter/ folder, or a Hub repo id
    MODEL_ID=user/my-model python app.py # how a Space names the model (Settings > Variables)
    python app.py --onnx EXPORT_DIR      # the export's int8 ONNX model answers (ONNX_MODEL on a Space)

Listens on GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (gradio's own variables; a Space sets them) unless
--host / --port are given. Only wiring lives here: loading, prediction, bad-upload messages and the page
itself are in ``hf_transfer.app.page`` (tested with the library); ``hf-transfer space serve`` runs the same page.
"""

from __future__ import annotations

import argparse
import sys

try:
    from hf_transfer.app import page
    from hf_transfer.errors import HfTransferError
except ImportError as error:  # the Space was uploaded without the package
    sys.exit(f"app.py needs the hf_transfer package ({error}). Install the project (pip install -e .) or put its "
             "hf_transfer/ folder next to app.py (`hf-transfer space push` does), then pip install -r requirements.txt.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the try-it page of a model trained with hf_transfer.")
    args = page.add_serve_arguments(parser).parse_args(argv)
    try:
        page.serve(args)
    except HfTransferError as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
