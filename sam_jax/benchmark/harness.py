"""Timing and memory: how every benchmark number is measured.

A workload is a callable doing one unit of work and returning the seconds it
took (untimed set-up happens inside). Workloads of one setup run round-robin,
one call of each per round, the order rotated every round, after untimed
warm-up calls; a time is the median over rounds. Machine load therefore
shifts both sides of a ratio alike.
"""

import statistics
from typing import Optional


def time_round_robin(workloads: dict, repeats: int, warmup: int, log) -> dict:
    """name -> seconds of each timed call; one call of each workload per round."""
    names = list(workloads)
    for _ in range(warmup):
        for name in names:
            workloads[name]()
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)  # who goes first rotates
        for name in names[shift:] + names[:shift]:
            seconds[name].append(workloads[name]())
        log(f"    round {round_index + 1}/{repeats}: " + ", ".join(
            f"{name} {seconds[name][-1]:.3f} s" for name in names))
    return seconds


def summarise(seconds: list, examples_per_call: int) -> dict:
    median = statistics.median(seconds)
    return {"seconds": seconds, "median_s": median,
            "examples_per_call": examples_per_call,
            "images_per_s": examples_per_call / median}


def round_ratio_range(numerator: dict, denominator: dict, throughput: bool) -> list:
    """[min, max] over rounds of the ratio from one round's pair of calls: the
    spread a single side-by-side measurement has on this machine."""
    ratios = []
    for a, b in zip(numerator["seconds"], denominator["seconds"]):
        ratios.append((numerator["examples_per_call"] / a)
                      / (denominator["examples_per_call"] / b) if throughput else a / b)
    return [min(ratios), max(ratios)]


def memory_stats(compiled) -> dict:
    """XLA's buffer assignment of a compiled step, in bytes.

    peak = arguments + outputs - outputs aliased to (donated) arguments + temp,
    the most the step holds at once. XLA's own `peak_memory_in_bytes` is kept
    for the record only: on CPU it leaves out the temp buffers.
    """
    stats = compiled.memory_analysis()
    out = {name: int(getattr(stats, f"{name}_size_in_bytes"))
           for name in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["xla_peak_memory"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return out


def step_flops(compiled) -> float:
    """Floating-point operations of one call of a compiled step, from XLA's
    cost analysis (what XLA counts: convolutions and dots as 2 * MACs; the
    body of a loop is counted once, so on CPU, where models/conv.py's weight
    gradient is a scan over the kernel offsets, the count is low)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def case_row(case: str, setup_label: str, measure: str, numerator: float,
             denominator: float, target: Optional[tuple] = None, **details) -> dict:
    """One ratio and its target ("<=" or ">=", bound); target None: reported only."""
    ratio = numerator / denominator
    passed = None
    if target is not None:
        op, bound = target
        passed = ratio <= bound if op == "<=" else ratio >= bound
    return {"case": case, "setup": setup_label, "measure": measure,
            "numerator": numerator, "denominator": denominator, "ratio": ratio,
            "target": None if target is None else f"{target[0]} {target[1]}",
            "passed": passed, **details}


def skipped_row(case: str, setup_label: str, measure: str, reason: str) -> dict:
    return {"case": case, "setup": setup_label, "measure": measure, "ratio": None,
            "target": None, "passed": None, "skipped": reason}
