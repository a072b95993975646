"""How the command line meets the library: the library's errors that are the user's to fix
become one line saying what to fix (never a traceback), and other libraries keep quiet. Kept
light: ``clipft --help`` imports this module, and neither torch nor OpenCLIP."""
from __future__ import annotations

import contextlib
import os
import sys

import click

from ..fileio import os_error_message


def user_error_types() -> tuple[type[Exception], ...]:
    """The library's errors that are the user's to fix. Imported when a command fails, not with
    the CLI: by then the command has loaded these modules, and ``clipft --help`` stays fast."""
    from ..cache.store import CacheError
    from ..catalogue import CatalogueError
    from ..fileio import OutputError
    from ..labeller_files import LabellerError
    from ..models import ModelLoadError
    from ..precision import PrecisionError
    from ..prompts import PromptFileError
    from ..reporting.html_report import ReportError
    from ..training.config import ConfigError
    from ..training.loop import TrainingDiverged
    from ..training.tasks import UntrainableError
    from .serve import ServeError

    return (PromptFileError, CatalogueError, ModelLoadError, ConfigError, LabellerError, CacheError, OutputError,
            UntrainableError, TrainingDiverged, ReportError, PrecisionError, ServeError, FileNotFoundError)


@contextlib.contextmanager
def user_errors():
    """Around a command's library calls: a user's error, or the operating system's refusal to
    write, leaves as click's one-line message; anything else is a bug and keeps its traceback."""
    try:
        yield
    except Exception as err:
        if isinstance(err, user_error_types()):
            raise click.ClickException(str(err)) from err
        if isinstance(err, OSError):  # a full disk, a read-only or forbidden folder: the file and what to do
            raise click.ClickException(os_error_message(err)) from err
        raise


def quiet_transformers() -> None:
    """transformers' warnings and progress bars off. Set through the environment it reads on
    import when it is not loaded yet: importing it here would slow every command's --help."""
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
        sys.modules["transformers"].logging.disable_progress_bar()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
