"""``python -m hybridflow``: the same as the ``hybridflow`` command."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":  # pragma: no cover
    main()
