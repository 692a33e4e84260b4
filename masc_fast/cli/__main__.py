"""``python -m masc_fast.cli COMMAND ...``: the ``masc-fast`` command, also the module torchrun
starts (``torchrun --nproc_per_node N -m masc_fast.cli train ...``)."""

import sys

from masc_fast.cli.main import main

sys.exit(main())
