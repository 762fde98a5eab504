"""Long work on the terminal: pushes and pulls with a bar per layer, as `docker push` and `docker pull` draw them,
and builds with a bar over the Dockerfile's steps; in a log, one line per layer or step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from tf1kernel.cli.common import err, out
from tf1kernel.engine.client import Client
from tf1kernel.errors import BuildError, KernelStackMissing
from tf1kernel.images import builder, registry, verify
from tf1kernel.images import recipes as images


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


class build_progress:
    """Progress for a build: a bar over Dockerfile steps on a terminal, plain step lines in logs."""

    def __enter__(self) -> Callable[[builder.BuildProgress], None]:
        if not out.is_terminal:
            return self._plain
        self.progress = Progress(SpinnerColumn(), TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=out)
        self.progress.start()
        self.task = self.progress.add_task("", total=None)
        return self._bar

    def __exit__(self, *exc: object) -> None:
        if out.is_terminal:
            self.progress.stop()

    def _bar(self, event: builder.BuildProgress) -> None:
        self.progress.update(self.task, completed=event.step, total=event.steps or None,
                             description=event.line.strip()[:60])

    @staticmethod
    def _plain(event: builder.BuildProgress) -> None:
        if event.line.startswith("Step "):
            out.print(f"[{event.step}/{event.steps}] {event.line.partition(' : ')[2][:100]}", highlight=False)


def add_kernel_stack(client: Client, image: str, platform: str, python: str,
                     missing: KernelStackMissing, ca_path: Path | None = None,
                     index_url: str | None = None) -> verify.ImageFacts:
    """Build the thin image that adds ipykernel to `image` (build --image, install --image), and verify it, with
    its progress."""
    out.print(f"{missing.message} Adding tf1kernel's kernel stack in [bold]"
              f"{images.kernel_stack_recipe(image, platform, missing.tensorflow).tag}[/]...", highlight=False)
    with build_progress() as on_progress:
        facts = builder.add_kernel_stack(client, image, platform, python, missing.tensorflow,
                                         ca_path or builder.host_pip_ca_bundle(), index_url, on_progress)
    out.print(f"[green]built and verified[/] {facts.image}: {facts.summary()}", highlight=False)
    return facts


def add_notebook_tools(client: Client, facts: verify.ImageFacts, python: str) -> verify.ImageFacts:
    """The thin image that adds the shell tools `facts.image` lacks (install --image), with its progress; `facts`
    itself, with one line saying why, when they cannot be added (no package manager, or no network in a build)."""
    tag = images.kernel_stack_recipe(facts.image, facts.platform, facts.tensorflow).tag
    out.print(f"{facts.image} has no {', '.join(facts.missing_tools)}, which TF1 notebooks call (`!git clone ...`). "
              f"Adding them in [bold]{tag}[/] (--no-shell-tools keeps the image as it is)...", highlight=False)
    try:
        with build_progress() as on_progress:
            added = builder.add_kernel_stack(client, facts.image, facts.platform, python, facts.tensorflow,
                                             builder.host_pip_ca_bundle(), on_progress=on_progress,
                                             tools_only=True)
    except BuildError as exc:
        out.print(f"[yellow]Could not add them[/] ({exc.message.splitlines()[0][:200]}): the kernel runs "
                  f"{facts.image} as it is.", highlight=False)
        return facts
    out.print(f"[green]built and verified[/] {added.image}: {added.summary()}", highlight=False)
    return added
