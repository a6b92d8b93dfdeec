"""Channel clients: the sandbox ones (files on disk, live web sessions) and, later, real providers."""
