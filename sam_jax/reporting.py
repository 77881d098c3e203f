"""What a run leaves behind: progress lines, metrics.jsonl, TensorBoard events."""

import json
import os
import time
from typing import Mapping

import tensorflow as tf

from sam_jax import workdir as workdir_lib


class MetricsWriter:
    """Writes scalars to metrics.jsonl and TensorBoard; only on process 0."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self._jsonl = open(workdir_lib.path(workdir, workdir_lib.METRICS_FILE), "a")
        self._tb = tf.summary.create_file_writer(
            workdir_lib.path(workdir, workdir_lib.TENSORBOARD_DIR))

    def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        with self._tb.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(f"{split}/{name}", value)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
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
