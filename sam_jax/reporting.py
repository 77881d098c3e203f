"""What a run leaves behind: progress lines, metrics.jsonl, TensorBoard events.

TensorBoard events are written with the `tensorboard` package's own event
writer, without TensorFlow; where `tensorboard` is not installed (the
accelerator machines, say) the run writes metrics.jsonl only and says so once.
"""

import json
import sys
import time
import types
from typing import Mapping

from sam_jax import workdir as workdir_lib


class _TensorBoard:
    """Scalar summaries in an events file, through tensorboard's writer."""

    def __init__(self, directory: str):
        if "://" not in directory:
            # tensorboard's switch to its own file API (the "notf" module): left
            # alone, its writer imports all of TensorFlow where it is installed,
            # seconds of every run's start. Cloud paths need TensorFlow's gfile.
            sys.modules.setdefault("tensorboard.compat.notf",
                                   types.ModuleType("tensorboard.compat.notf"))
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self._writer = EventFileWriter(directory)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        summary = self._summary(value=[
            self._summary.Value(tag=name, simple_value=value)
            for name, value in scalars.items()])
        self._writer.add_event(self._event(wall_time=time.time(), step=step,
                                           summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricsWriter:
    """Writes scalars to metrics.jsonl and TensorBoard; only on process 0."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self._jsonl = open(workdir_lib.path(workdir, workdir_lib.METRICS_FILE), "a")
        try:
            self._tb = _TensorBoard(workdir_lib.path(workdir, workdir_lib.TENSORBOARD_DIR))
        except ImportError:
            self._tb = None
            print("note: the tensorboard package is not installed; metrics go to "
                  f"{workdir_lib.METRICS_FILE} only", file=sys.stderr, flush=True)

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.write(step, {f"{split}/{name}": value
                                  for name, value in scalars.items()})

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """Steps/s and ETA over the steps since the last report."""

    def __init__(self, start_step: int, total_steps: int):
        self.total_steps = total_steps
        self._last_step, self._last_time = start_step, time.perf_counter()

    def update(self, step: int) -> tuple[float, float]:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return rate, (self.total_steps - step) / max(rate, 1e-9)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
