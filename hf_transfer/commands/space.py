"""hf-transfer space: the Gradio Space of a trained model. ``space push`` publishes it to the Hub.

Other Space actions (e.g. serving the app locally) are further sub-commands of this group: add them to
``ACTIONS`` below as ``name: (help, add_arguments, run)``.
"""

from __future__ import annotations


def _push_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="Model repo the Space serves, NAMESPACE/NAME (pushed with "
                        "`hf-transfer push`; merged model or adapter).")
    parser.add_argument("--space-id", required=True, help="Space repo to create or update, NAMESPACE/NAME.")
    parser.add_argument("--private", action="store_true", help="Create the Space as private.")
    parser.add_argument("--model-revision", default=None, help="Branch or commit of --model to serve (default: main).")
    parser.add_argument("--app-dir", default=None, help="The Gradio app folder (default: the checkout's space_app/).")
    parser.add_argument("--onnx", default=None, metavar="EXPORT_DIR",
                        help="Serve the int8 ONNX model of this export folder (`hf-transfer export --format onnx "
                             "--quantize int8`) with onnxruntime instead of the torch model; it is uploaded to the "
                             "Space's onnx/ folder and the Space card says which model answers.")


def _push(args) -> int:
    from hf_transfer.publish.space_repo import push_space

    result = push_space(args.model, args.space_id, private=args.private, model_revision=args.model_revision,
                        app_dir=args.app_dir, onnx_dir=args.onnx)
    print(result.describe())
    return 0


def _serve_arguments(parser) -> None:
    from hf_transfer.app.page import add_serve_arguments

    add_serve_arguments(parser)


def _serve(args) -> int:
    from hf_transfer.app.page import serve

    serve(args)  # blocks until Ctrl+C
    return 0


ACTIONS = {
    "push": ("Create or update a Gradio Space on the Hub that serves a pushed model (app, pinned requirements, "
             "Spaces README, model id).", _push_arguments, _push),
    "serve": ("Serve the try-it page of a trained model on this machine (the app a Space runs): upload an image, see "
              "the top labels with scores, the model's labels, metrics, examples and how it was trained. --model takes "
              "a run's --output-dir, its adapter/ folder or a Hub repo id. Stop with Ctrl+C.", _serve_arguments, _serve),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser("space", help="The model's Gradio Space: " + ", ".join(ACTIONS) + ".",
                                   description="Gradio Space commands.")
    actions = parser.add_subparsers(dest="space_action", required=True, metavar="ACTION")
    for name, (help_text, add_arguments, run) in ACTIONS.items():
        action = actions.add_parser(name, help=help_text, description=help_text)
        add_arguments(action)
        action.set_defaults(func=lambda args, extra, run=run: run(args))
