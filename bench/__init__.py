"""florasync's benchmarks: each one runs the real CLI against the sandbox and prints one line."""
