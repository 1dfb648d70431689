"""``python -m tnlm_models``: the ``tnlm-train`` command."""

from .cli import main

raise SystemExit(main())
