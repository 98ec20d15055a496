"""What a user sees when something goes wrong: one line, a non-zero exit."""
import contextlib
import sys


class UserError(Exception):
    """A problem the user can fix (bad input, missing file); shown as one line, exit code 1."""


@contextlib.contextmanager
def exit_on_user_error():
    """Turn a UserError into a one-line message on stderr and a non-zero exit."""
    try:
        yield
    except UserError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
