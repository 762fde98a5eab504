"""Pushes and pulls on the terminal: a bar per layer, as `docker push` and `docker pull` draw them; in a log, one
line per layer as it finishes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from tf1kernel.cli.common import err
from tf1kernel.images import registry


@contextmanager
def layer_progress() -> Iterator[registry.Progress]:
    """A progress callback for registry.push and registry.pull, drawn on stderr."""
    bars: dict[str, int] = {}
    finished: set[str] = set()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=err) if err.is_terminal else None

    def report(transfer: registry.Transfer) -> None:
        if not transfer.layer or len(transfer.layer) != 12:  # a layer's short id; else a message about the tag
            return
        done = transfer.finished
        if progress is not None:
            if transfer.layer not in bars:
                bars[transfer.layer] = progress.add_task(transfer.layer, total=transfer.total or None)
            task = bars[transfer.layer]
            if done:
                total = progress.tasks[task].total or transfer.done or 1
                progress.update(task, completed=total, total=total, description=f"{transfer.layer} {transfer.status}")
            elif transfer.total:
                progress.update(task, completed=transfer.done, total=transfer.total)
        elif done and transfer.layer not in finished:
            finished.add(transfer.layer)
            err.print(f"  {transfer.layer}: {transfer.status}", highlight=False, markup=False)

    if progress is None:
        yield report
        return
    with progress:
        yield report
