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


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """The tiny real sweep, launched and resumed once per test session through the command line (see
    tests/shared_sweep.py); the end-to-end, console, case-record and relaunch checks all read it."""
    from disk import drop_checkpoints
    from shared_sweep import run_tiny_sweep

    sweep = run_tiny_sweep(tmp_path_factory.mktemp("tiny_sweep"), tmp_path_factory.mktemp("tiny_sweep_ray"))
    yield sweep
    drop_checkpoints(sweep.paths.results)
