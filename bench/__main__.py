"""`python -m bench` is the same as the `fpbench` console script (both enter through `bench.entry`)."""

from bench.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
