"""CPU time and memory of a process together with all its descendants (e.g. a coordinator and
its worker processes), and a background sampler that keeps the peaks."""

import threading
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeMemory:
    # Resident bytes summed over the tree: pages two of its processes share count twice, so this
    # is an upper bound, but it does not depend on what other processes run on the machine.
    rss: int
    # Proportional set size: each shared page split between all processes mapping it, including
    # processes outside the tree (other TensorFlow programs lower it), so it moves with them.
    pss: int
    processes: dict[str, dict[str, int]]  # "pid name" -> {"rss": bytes, "pss": bytes}


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by the live processes of the tree."""
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_memory(pid: int) -> TreeMemory:
    rss = pss = 0
    processes = {}
    for process in _tree(pid):
        try:
            info = process.memory_full_info()  # /proc/PID/smaps_rollup: a few ms per process
            name = process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += info.pss
        processes[f"{process.pid} {name}"] = {"rss": info.rss, "pss": info.pss}
    return TreeMemory(rss, pss, processes)


class PeakMemorySampler:
    """Samples the memory of one or more process trees from a daemon thread; keeps the peaks."""

    def __init__(self, interval_s: float = 0.2):
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._roots: dict[str, int] = {}
        self._peak_rss: dict[str, int] = {}
        self._peak_pss: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._roots[name] = pid
            self._peak_rss.setdefault(name, 0)
            self._peak_pss.setdefault(name, 0)

    def sample(self, name: str) -> TreeMemory | None:
        """Samples one tree now (and counts it towards the peaks); None once its root is gone."""
        with self._lock:
            pid = self._roots.get(name)
        if pid is None:
            return None
        try:
            memory = tree_memory(pid)
        except psutil.NoSuchProcess:
            return None
        with self._lock:
            self._peak_rss[name] = max(self._peak_rss[name], memory.rss)
            self._peak_pss[name] = max(self._peak_pss[name], memory.pss)
        return memory

    def peaks(self, name: str) -> tuple[int, int]:
        """(peak tree RSS, peak tree PSS) in bytes seen so far."""
        with self._lock:
            return self._peak_rss[name], self._peak_pss[name]

    def __enter__(self) -> "PeakMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                names = list(self._roots)
            for name in names:
                self.sample(name)
