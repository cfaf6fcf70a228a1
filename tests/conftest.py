"""Test configuration: a deterministic hypothesis profile by default.

Set GRAPHPAI_HYPOTHESIS=long for a longer randomised run.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=25)
settings.register_profile("long", database=None, deadline=None, max_examples=500)
settings.load_profile(os.environ.get("GRAPHPAI_HYPOTHESIS", "ci"))
