"""Worker exit codes (no dependencies, so `check` runs in a bare Python)."""
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VIDEO, EXIT_NOBODY = 0, 1, 2, 3, 4
EXIT_MODEL, EXIT_WRITE, EXIT_ENVIRONMENT, EXIT_GPU_MEMORY, EXIT_CANCELLED = 5, 6, 7, 8, 130
