"""Request counts and latency histograms in the Prometheus text format (v0.0.4), by hand: no
dependency, and the few series a service needs."""

from __future__ import annotations

import threading
from collections import defaultdict

# seconds; fine steps where the latency goal (15 ms) lies
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _labels(**labels: str) -> str:
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in labels.items())
    return "{" + body + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._counters: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route)
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            counts = self._buckets.setdefault(key, [0] * (len(BUCKETS) + 1))
            counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1
            self._sums[key] += seconds

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def render(self, gauges: dict[str, float] | None = None) -> str:
        with self._lock:
            lines = ["# HELP shopseq_http_requests_total HTTP requests by method, route and status.",
                     "# TYPE shopseq_http_requests_total counter"]
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f"shopseq_http_requests_total{_labels(method=method, route=route, status=status)} {n}")
            lines += ["# HELP shopseq_http_request_duration_seconds Request latency in the service.",
                      "# TYPE shopseq_http_request_duration_seconds histogram"]
            for (method, route), counts in sorted(self._buckets.items()):
                total = 0
                for bound, c in zip([*BUCKETS, float("inf")], counts, strict=True):
                    total += c
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append("shopseq_http_request_duration_seconds_bucket"
                                 f"{_labels(method=method, route=route, le=le)} {total}")
                lab = _labels(method=method, route=route)
                lines.append(f"shopseq_http_request_duration_seconds_sum{lab} {self._sums[(method, route)]:.6f}")
                lines.append(f"shopseq_http_request_duration_seconds_count{lab} {total}")
            for name, n in sorted(self._counters.items()):
                lines += [f"# TYPE shopseq_{name}_total counter", f"shopseq_{name}_total {n}"]
        for name, value in sorted((gauges or {}).items()):
            lines += [f"# TYPE shopseq_{name} gauge", f"shopseq_{name} {value}"]
        return "\n".join(lines) + "\n"
