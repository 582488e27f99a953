"""Scoring command: prints one JSON object with full-precision scores and the settings used.

    python -m tasks.metrics e2e HYP_FILE REF_FILE
    python -m tasks.metrics dart HYP_FILE REF0 [REF1 ...]
    python -m tasks.metrics squad DATASET_JSON PREDICTIONS_JSON

Bad input prints `error: <file>: line <n>: ...` on stderr and exits with status 2. Metrics that
need Java are listed under "unavailable" (with the reason and install command) when it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys

from tasks.metrics._io import MetricInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.metrics", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="metric", required=True)
    e2e = sub.add_parser("e2e", help="E2E: BLEU, NIST, METEOR, ROUGE_L, CIDEr (e2e-metrics)")
    e2e.add_argument("hyp_file", help="one system output per line")
    e2e.add_argument("ref_file", help="references, one per line, sources separated by a blank line")
    e2e.add_argument("--no-coco", action="store_true", help="skip the Java metrics (METEOR, ROUGE_L, CIDEr)")
    dart = sub.add_parser("dart", help="DART: BLEU, METEOR, TER (GenerationEval as used by LoRA)")
    dart.add_argument("hyp_file", help="one system output per line")
    dart.add_argument("ref_files", nargs="+", help="reference0 reference1 ...: one file per reference index")
    dart.add_argument(
        "--no-preprocess",
        action="store_true",
        help="score the texts as given (no LoRA --tokenize --lower), exactly as eval.py reads files",
    )
    dart.add_argument("--no-meteor", action="store_true", help="skip METEOR (Java)")
    squad = sub.add_parser("squad", help="SQuAD v1.1: exact match and F1 (evaluate-v1.1.py)")
    squad.add_argument("dataset_json")
    squad.add_argument("predictions_json", help="JSON object {question id: answer text}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.metric == "e2e":
            from tasks.metrics.e2e import score_files

            result = score_files(args.hyp_file, args.ref_file, coco=not args.no_coco)
        elif args.metric == "dart":
            from tasks.metrics.dart import score_files

            result = score_files(
                args.hyp_file, args.ref_files, preprocess=not args.no_preprocess, meteor=not args.no_meteor
            )
        else:
            from tasks.metrics.squad import score_files

            result = score_files(args.dataset_json, args.predictions_json)
    except MetricInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
