"""What runs inside one trial: data, models, losses, metrics and the training loop."""

import os


def usable_cpus() -> int:
    """Returns the CPUs this process may run on: its affinity mask where the OS keeps one (a container's
    cpuset, ``taskset``), which can be fewer than ``os.cpu_count()``, the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
