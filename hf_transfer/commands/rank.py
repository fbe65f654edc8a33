"""hf-transfer rank: which checkpoint to fine-tune, scored on your data before any training."""

from __future__ import annotations

from hf_transfer import run_folder
from hf_transfer.commands._data_options import add_data_options, data_config_from


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rank", help="Rank candidate checkpoints on your data (LogME, H-score, NCE, LEEP, k-NN) without training.",
        description="Embeds a stratified sample of the training split with each candidate (features are cached), "
                    "scores transferability, compares each candidate with the same architecture at random init, "
                    "and writes OUT/ranking.json and OUT/ranking.png.",
    )
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="Candidate checkpoints: Hub ids, local folders, embedded:efficientnet_lite0.")
    parser.add_argument("--output-dir", required=True, help="Folder for ranking.json and ranking.png.")
    parser.add_argument("--sample-size", type=int, default=500,
                        help="Images scored per candidate (stratified sample of the training split; default 500).")
    parser.add_argument("--rank-by", default="logme", choices=["logme", "h_score", "nce", "leep", "knn_accuracy"],
                        help="Score that orders the candidates (default logme: defined for headless backbones too).")
    parser.add_argument("--no-baseline", action="store_true",
                        help="Skip the random-init comparison (the negative-transfer guardrail); halves the time.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sample, the folds and the random init.")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--cache-dir", default=None,
                        help="Feature cache folder (default: $HF_TRANSFER_CACHE/features).")
    add_data_options(parser)
    parser.set_defaults(func=run)


def run(args, extra) -> int:
    from hf_transfer.transferability.rank import format_table, rank_models, write_ranking

    run_folder.refuse_file(args.output_dir)  # before the work, which would be lost
    data = data_config_from(args)
    ranking = rank_models(data=data, models=args.models, sample_size=args.sample_size, seed=args.seed,
                          rank_by=args.rank_by, baseline=not args.no_baseline, cache_dir=args.cache_dir,
                          batch_size=args.batch_size, verbose=args.verbose)
    json_path, png_path = write_ranking(ranking, args.output_dir)
    print(format_table(ranking))
    print(f"wrote {json_path} and {png_path}")
    return 0
