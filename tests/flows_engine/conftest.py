from __future__ import annotations

import pytest

from flows.testing import ModelNlu, build_model_nlu


@pytest.fixture(scope="session")
def model_nlu() -> ModelNlu:
    """The real NLU (intent model trained once per session, us_west slang)."""
    return build_model_nlu("us_west")
