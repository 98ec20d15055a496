"""What a user sees when something goes wrong: one line, a non-zero exit. A problem with the input is
a UserError, said as it is; anything else that escapes is a bug of ours, said as such in one line that
points at a log file holding the full traceback (a developer still has it; a user never reads it)."""
import contextlib
import datetime
import platform
import sys
import tempfile
import traceback
from pathlib import Path

REPORT_TO = "the project's issue tracker"
FILE_OUTPUTS = (".pth", ".faiss", ".json", ".db")  # an --out that names a file, not a run folder


class UserError(Exception):
    """A problem the user can fix (bad input, missing file); shown as one line, exit code 1."""


@contextlib.contextmanager
def exit_on_user_error(script="script", log_folder=None):
    """Turn a UserError into a one-line message on stderr and a non-zero exit; any other exception into
    one line saying it is an internal error, with its traceback written to a log in `log_folder` (the
    run folder; the system's temporary folder when that cannot be written)."""
    try:
        yield
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
    except Exception as err:  # noqa: BLE001 (the guard's purpose: no traceback on the console)
        log = write_crash_log(script, log_folder, err)
        sys.exit(f"internal error in {script} ({type(err).__name__}): a bug, not your input. The full traceback is "
                 f"in {log}; please report it to {REPORT_TO} with that file and the command you ran")


def write_crash_log(script, folder, err) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"{script} failed at {stamp}\ncommand: {' '.join(sys.argv)}\npython {platform.python_version()} "
            f"on {platform.platform()}\n\n" + "".join(traceback.format_exception(err)))
    for where in ([Path(folder)] if folder is not None else []) + [Path(tempfile.gettempdir())]:
        path = where / f"internal_error_{script}_{stamp}.log"
        try:
            where.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(no writable folder for the log)")


def log_folder_of(args):
    """Where a script's crash log goes: its run folder (--out, or the folder of an --out file)."""
    out = getattr(args, "out", None)
    if out is None:
        return None
    out = Path(out)
    return out.parent if out.suffix in FILE_OUTPUTS else out


def run_script(script, main, parse_args, argv=None):
    """A script's entry point: flags parsed (argparse's usage line and exit 2 for a malformed one), then
    main(args) under the guard, whose crash log lands in the run folder."""
    with exit_on_user_error(script):
        args = parse_args(argv)
    with exit_on_user_error(script, log_folder_of(args)):
        return main(args)
