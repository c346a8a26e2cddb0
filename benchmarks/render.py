"""Rewrite BENCHMARKS.md from benchmarks/results.jsonl:  python benchmarks/render.py"""

from shopseq.benchmarking import write_markdown

if __name__ == "__main__":
    print(f"wrote {write_markdown()}")
