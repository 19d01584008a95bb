"""``python -m dspex.cli``: the ``dspex`` command."""

from dspex.cli.app import main

if __name__ == "__main__":
    main()
