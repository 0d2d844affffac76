pytest_plugins = ["clinic.testing.fixtures"]
