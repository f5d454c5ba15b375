"""``python -m clipguide.shapes.training STAGE``: see :mod:`clipguide.shapes.training`."""

from clipguide.shapes.training import main

main()
