"""`python -m bench` is the same as the `fpbench` console script."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
