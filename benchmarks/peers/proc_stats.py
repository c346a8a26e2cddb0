"""Process statistics for the peer drivers, which run in the peers' own virtualenvs (no shopseq)."""


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0
