"""A Lambda Runtime API emulator, and the real runtime client (awslambdaric) in a process
of its own: the handler runs here as Lambda runs it."""
