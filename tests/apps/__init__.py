"""Applications that acceptance-test workers import with `--app tests.apps.<module>`."""
