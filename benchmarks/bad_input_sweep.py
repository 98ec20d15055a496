"""A random sweep of bad inputs through every script: does any end in a traceback?

    python benchmarks/bad_input_sweep.py                      # 300 runs, at most 15 minutes; --out reports publishes
    python benchmarks/bad_input_sweep.py --runs 60 --seconds 240 --seed 1

Sets up its own small world in a temporary folder (synthetic data in PneumoniaMNIST's format, a checkpoint
trained on it for one epoch, its archive), then runs the scripts in this process as their `__main__`
blocks do (pneumo.errors.run_script), each with one or two of its own flags set to a random value
(numbers out of range, NaN, infinities, negative, huge, empty, words, the flag's valid choices) or one
input replaced by random bytes (checkpoint, image, DICOM, index, data file, Milvus database).

A run passes when it answers (exit 0), refuses in one line (exit 1) or with argparse's usage (exit 2),
and prints no traceback and no "internal error" line. Runs still working after --run_seconds (a huge
number of epochs asked for, say) are stopped and listed, not failed. Writes <out>/bad_input_sweep.json
and .md; exit 1 when a run failed.
"""
import contextlib
import io
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.cli import make_parser, positive_int
from pneumo.errors import run_script
from pneumo.runtime import DEFAULT_RUN
from pneumo.synthetic import write_synthetic_npz
from task1 import evaluate, gradcam, train
from task2 import generate_reports
from task3 import build_index, query

SCRIPTS = {"evaluate": evaluate, "gradcam": gradcam, "train": train, "build_index": build_index, "query": query,
           "generate_reports": generate_reports}
VALUES = ["0", "1", "2", "3", "-1", "-5", "0.5", "1.5", "2e-3", "nan", "inf", "-inf", "1e9", "100000", "abc", "",
          "-0", "0x10", "1,2", "☃"]
INPUT_KINDS = ("checkpoint", "image", "dicom", "index", "data", "milvus")
NEVER_FUZZED = {"-h", "--out", "--reports", "--data_root", "--checkpoint", "--resume", "--share", "--evaluate", "--images"}


class _Parser(BaseException):
    """Carries a script's parser out of its parse_args."""


class Overtime(BaseException):
    """Raised by the alarm inside a run that took longer than --run_seconds (not an Exception: no guard takes it)."""


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--runs", type=positive_int, default=300, help="runs in the sweep (default 300)")
    p.add_argument("--seconds", type=positive_int, default=900, help="stop starting runs after this (default 900)")
    p.add_argument("--run_seconds", type=positive_int, default=60, help="stop one run after this (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


def make_world(folder: Path) -> dict:
    """Synthetic data, a one-epoch checkpoint and its archive: what the runs start from."""
    data = folder / "data"
    write_synthetic_npz(data / "pneumoniamnist.npz", counts={"train": 128, "val": 64, "test": 96}, seed=0)
    checkpoint = folder / "model" / "task1_model.pth"
    quiet(run_script, "train", train.main, train.parse_args,
          ["--data_root", str(data), "--out", str(checkpoint), "--epochs", "2", "--batch_size", "16", "--device", "cpu",
           "--amp", "none", "--bn_stats", "recompute", "--ema_decay", "0.8"])
    index = folder / "index" / "task3_index.faiss"
    quiet(run_script, "build_index", build_index.main, build_index.parse_args,
          ["--checkpoint", str(checkpoint), "--data_root", str(data), "--out", str(index), "--device", "cpu"])
    if not index.is_file():
        raise SystemExit("the sweep's own set-up failed (no archive); run it with a working install")
    return {"data": data, "checkpoint": checkpoint, "index": index.parent}


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with contextlib.suppress(SystemExit):
            return fn(*args)


def base_args(name, world, out: Path) -> list:
    args = ["--data_root", str(world["data"]), "--device", "cpu"]
    if name == "train":
        return args + ["--out", str(out / "m.pth"), "--epochs", "1", "--batch_size", "32", "--amp", "none"]
    args += ["--checkpoint", str(world["checkpoint"])]
    if name == "build_index":
        return args + ["--out", str(out / "index.faiss")]
    if name in ("query", "generate_reports", "evaluate", "gradcam"):
        args += ["--index", str(world["index"])]
    if name == "generate_reports":
        args += ["--vlm", "none"]
    return args + ["--out", str(out)]


def random_flags(rng, module) -> list:
    """One or two of the script's own flags, each set to a random value or one of its choices."""
    parser = parser_of(module)
    options = [a for a in parser._actions if a.option_strings and a.option_strings[-1] not in NEVER_FUZZED]
    flags = []
    for action in rng.sample(options, k=min(len(options), rng.choice([1, 2]))):
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a switch
            flags.append(flag)
            continue
        pool = VALUES + [str(c) for c in (action.choices or [])]
        count = rng.choice([1, 2, 3]) if action.nargs in ("+", "*") else 1
        flags += [flag, *(rng.choice(pool) for _ in range(count))]
    return flags


def parser_of(module):
    """The script's parser, caught as parse_args builds it."""
    import argparse
    seen = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        seen["parser"] = self
        raise _Parser  # stop before parsing anything
    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args([])
    except _Parser:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return seen["parser"]


def random_input(rng, kind, name, args, folder: Path) -> list:
    """args with one input replaced by a file of random bytes (kept where the script reads that input)."""
    blob = np.random.default_rng(rng.randrange(2**32)).bytes(rng.choice([0, 1, 100, 4096, 70000]))
    path = folder / {"checkpoint": "random.pth", "image": "random.png", "dicom": "random.dcm", "index": "random_index",
                     "data": "random_data", "milvus": "random.db"}[kind]
    if kind == "dicom":
        blob = bytes(128) + b"DICM" + blob
    if kind == "index":
        path.mkdir()
        (path / "task3_index.faiss").write_bytes(blob)
        (path / "task3_index.json").write_bytes(blob[::-1])
    elif kind == "data":
        path.mkdir()
        (path / "pneumoniamnist.npz").write_bytes(blob)
    else:
        path.write_bytes(blob)
    flag = {"checkpoint": "--checkpoint", "index": "--index", "data": "--data_root"}.get(kind)
    if flag and flag in args:
        args = [str(path) if previous == flag else a for previous, a in zip([None, *args], args)]
    elif kind in ("image", "dicom") and name in ("evaluate", "gradcam", "query", "generate_reports"):
        args = args + ["--images", str(path)]
    elif kind == "milvus" and name in ("build_index", "query"):
        args = args + ["--backend", "milvus", "--uri", str(path)]
    return args


def raise_overtime(*_):
    raise Overtime


def one_run(name, args, run_seconds):
    module = SCRIPTS[name]
    out, err = io.StringIO(), io.StringIO()
    code, start = 0, time.perf_counter()
    signal.signal(signal.SIGALRM, raise_overtime)
    signal.alarm(run_seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_script(name, module.main, module.parse_args, args)
            except SystemExit as exit_:
                code = 1 if isinstance(exit_.code, str) else (exit_.code or 0)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=err)
    except Overtime:
        code = "overtime"
    finally:
        signal.alarm(0)
    text = out.getvalue() + err.getvalue()
    failed = code not in (0, 1, 2, "overtime") or "Traceback" in text or "internal error" in text
    last = err.getvalue().replace("\r", "\n").strip().splitlines()[-1:] or [""]
    return {"script": name, "args": args, "code": code, "seconds": round(time.perf_counter() - start, 2),
            "failed": failed, "last_line": last[0][:300]}


def main(args):
    check_writable(args.out)
    rng = random.Random(args.seed)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(Path(tmp))
        start = time.perf_counter()
        for i in range(args.runs):
            if time.perf_counter() - start > args.seconds:
                break
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            name = rng.choice(sorted(SCRIPTS))
            run_args = base_args(name, world, folder / "out")
            if rng.random() < 0.6:
                run_args += random_flags(rng, SCRIPTS[name])
            else:
                run_args = random_input(rng, rng.choice(INPUT_KINDS), name, run_args, folder)
            record = one_run(name, run_args, args.run_seconds)
            record["args"] = [a.replace(tmp, "<tmp>") for a in record["args"]]
            record["last_line"] = record["last_line"].replace(tmp, "<tmp>")
            runs.append(record)
            print(f"{i + 1:4d} {name:<16} exit {record['code']!s:<8} {'FAILED ' if record['failed'] else ''}"
                  f"{record['last_line'][:110]}", flush=True)
    result = summarise(runs, args)
    write_json_atomic(args.out / "bad_input_sweep.json", result)
    write_text_atomic(args.out / "bad_input_sweep.md", markdown(result))
    print(markdown(result))
    if result["failed"]:
        raise SystemExit(f"error: {result['failed']} of {len(runs)} runs ended in a traceback or an internal error")
    return result


def summarise(runs, args) -> dict:
    outcomes = Counter((r["script"], str(r["code"])) for r in runs)
    return {"runs": len(runs), "seed": args.seed, "failed": sum(r["failed"] for r in runs),
            "overtime": [r for r in runs if r["code"] == "overtime"],
            "seconds": round(sum(r["seconds"] for r in runs), 1),
            "by_script": {s: {c: n for (s2, c), n in sorted(outcomes.items()) if s2 == s} for s in sorted(SCRIPTS)},
            "failures": [r for r in runs if r["failed"]], "all": runs}


def markdown(result) -> str:
    lines = [f"# Bad-input sweep: {result['runs']} random runs, {result['failed']} with a traceback or internal error", "",
             f"Written by `python benchmarks/bad_input_sweep.py --seed {result['seed']}` ({result['seconds']:.0f} s of runs). "
             "Each run sets one or two of a script's flags to a random value, or replaces one input by random bytes.", "",
             "| script | exit 0 | exit 1 (one line) | exit 2 (usage) | stopped at the time limit |", "|---|---|---|---|---|"]
    for script, codes in result["by_script"].items():
        lines.append(f"| {script} | {codes.get('0', 0)} | {codes.get('1', 0)} | {codes.get('2', 0)} | {codes.get('overtime', 0)} |")
    for run in result["failures"]:
        lines.append(f"\nFAILED: `{run['script']} {' '.join(run['args'])}` -> {run['last_line']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("bad_input_sweep", main, parse_args)
