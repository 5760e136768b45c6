"""The user-journey tests run the installed commands as subprocesses (see test_documented_commands)."""


def pytest_configure(config):
    # pytest-timeout registers this marker when it is installed; without it, say what it means
    # rather than warn (each journey's subprocess has its own time limit either way).
    config.addinivalue_line("markers", "timeout(seconds): the test's time limit (pytest-timeout)")
    config.addinivalue_line("markers", "e2e: runs an installed command as a subprocess (seconds to "
                                       "a minute each); -m 'not e2e' leaves them out")
