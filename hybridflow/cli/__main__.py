"""``python -m hybridflow.cli``: the same as the ``hybridflow`` command."""

from . import main

__all__: list[str] = []

if __name__ == "__main__":  # pragma: no cover
    main()
