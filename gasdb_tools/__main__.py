"""``python -m gasdb_tools`` runs the ``gasdb`` command line (also under ``torchrun``)."""

from gasdb_tools.cli import main

if __name__ == "__main__":
    main()
