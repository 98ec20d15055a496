"""Render the Markdown reports from the results files (templates in pneumo/report_templates/).

    python scripts/render_reports.py                       # the published reports/ from reports/ and models/
    python scripts/render_reports.py --run runs/NAME       # a run folder's own reports from its own files

Every number in a rendered report comes from a results file; the prose is the template's.
"""
from pathlib import Path

from pneumo.cli import make_parser
from pneumo.errors import run_script
from pneumo.reporting import render_reports


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--run", type=Path, help="a run folder written by scripts/run_all.sh: read and write there")
    p.add_argument("--results", type=Path, default=Path("reports"), help="folder with the results files (default reports)")
    p.add_argument("--models", type=Path, default=Path("models"), help="folder with the checkpoint history and index (default models)")
    p.add_argument("--out", type=Path, help="where the reports go (default: --results)")
    args = p.parse_args(argv)
    if args.run:
        args.results = args.models = args.run
    return args


def main(args):
    for path in render_reports(args.results, args.models, args.out or args.results):
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script("render_reports", main, parse_args)
