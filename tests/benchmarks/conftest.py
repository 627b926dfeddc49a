"""The benchmarks are scripts run by hand (see README.md), never tests: a benchmark
measures and prints, it asserts nothing and takes minutes. pytest must not collect or
import any module here, whatever its name."""

collect_ignore_glob = ["*.py"]
