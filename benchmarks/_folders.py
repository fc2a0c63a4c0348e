"""The work folder of a benchmark run, shared by the benchmark scripts."""

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def work_folder(keep, prefix, parser):
    """The folder a benchmark works in: ``keep`` (new or empty, kept afterwards), or a
    temporary folder named ``prefix...`` that is removed at the end, whatever happens.

    ``parser`` (an `argparse.ArgumentParser`) reports a ``keep`` folder that is not empty.
    """
    if keep:
        root = Path(keep).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            parser.error(f"--keep {root}: the folder is not empty")
        yield root
        return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
