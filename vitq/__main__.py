"""``python -m vitq ...`` runs the command line (the form ``torchrun -m vitq`` needs)."""
from vitq.cli import main

main()
