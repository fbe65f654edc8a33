"""hf-transfer push: a trained run (merged model or peft adapter) with its model card to the Hub."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="Push a trained model (or its peft adapter) with a model card to the Hugging Face Hub.",
        description="Uploads the safetensors weights, image processor, labels, metrics, plots and a model card in "
                    "one commit; never the checkpoints/ folder. The token comes from HF_TOKEN or `hf auth login` "
                    "and is checked before anything is uploaded. Unchanged files are not sent again.",
    )
    parser.add_argument("--model-dir", required=True, help="The --output-dir of a finished `hf-transfer train` run.")
    parser.add_argument("--repo-id", required=True, help="Target model repo, NAMESPACE/NAME (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private (refused if it exists "
                        "and is public).")
    parser.add_argument("--revision", default=None, help="Branch to push to (created from main if missing).")
    parser.add_argument("--adapter-only", action="store_true",
                        help="Push the peft adapter from MODEL_DIR/adapter/ instead of the merged model; it loads "
                             "by repo id with its base model and labels.")
    parser.add_argument("--no-examples", dest="include_examples", action="store_false",
                        help="Leave MODEL_DIR/examples/ (validation images the Space shows) out of the push.")
    parser.add_argument("--commit-message", default=None, help="Commit message (default says what was pushed).")
    parser.add_argument("--dry-run", action="store_true",
                        help="List the files and print the model card, push nothing (no token needed).")
    parser.set_defaults(func=run)


def run(args, extra: list[str]) -> int:
    from hf_transfer.publish import hub

    if args.dry_run:
        files = hub.plan_model_files(args.model_dir, adapter_only=args.adapter_only,
                                     include_examples=args.include_examples)
        card = hub.build_model_card(args.model_dir, repo_id=args.repo_id, adapter=args.adapter_only,
                                    license=hub.base_model_license(hub.run_base_model(args.model_dir), revision=None,
                                                                   api=None),
                                    pushed_files=set(files))
        print("\n".join(["files:", *(f"  {path}" for path in sorted(files)), "  README.md", "", str(card)]))
        return 0
    result = hub.push_model(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
                            adapter_only=args.adapter_only, include_examples=args.include_examples,
                            commit_message=args.commit_message)
    print(result.describe())
    return 0
