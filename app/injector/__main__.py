"""``python -m app.injector serve --cert ... --key ... --config ...``."""

from __future__ import annotations

import sys

from app.injector.cli import main

sys.exit(main())
