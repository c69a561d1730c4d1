"""``python -m dqaudit ...``: the same command line as ``dqaudit ...``."""

from dqaudit.cli import main

if __name__ == "__main__":
    main()
