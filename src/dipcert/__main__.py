"""``python -m dipcert`` is the ``dipcert`` command."""
from .cli import main

main()
