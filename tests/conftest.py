import os

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Selenium (see tests/browser.py); one per test session."""
    from browser import Browser

    session = Browser()
    yield session
    session.quit()
