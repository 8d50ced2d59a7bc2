"""Exit codes of every command line of hybrik-blender: the worker
(``python -m hybrik_blender.worker capture|batch|check``) and the Blender
side (``python -m hybrik_blender capture|import|retarget``). The README's
table is written from MEANINGS and is the contract. No dependencies, so
``check`` runs in a bare Python."""
EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VIDEO, EXIT_NOBODY = 0, 1, 2, 3, 4
EXIT_MODEL, EXIT_WRITE, EXIT_ENVIRONMENT, EXIT_GPU_MEMORY, EXIT_CANCELLED = 5, 6, 7, 8, 130
EXIT_SOME_FAILED = 9      # batch: some videos failed (the manifest says which and why)
EXIT_RESULT = 10          # a result file (or a take .blend, a rig file) unreadable or invalid
EXIT_NO_PROGRESS = 11     # --resume made no progress: nothing written, the partial result kept

MEANINGS = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error: a bug (please report it with the log)",
    EXIT_USAGE: "bad arguments: an unknown or out-of-range option value, a missing input "
                "file, an output path that is one of the inputs (same path, hard link or "
                "symbolic link) or that exists and is not a regular file (a folder, FIFO or "
                "device), a --person the result does not have, a rig or bone map that does "
                "not fit",
    EXIT_VIDEO: "the video is unreadable, corrupt, or has no frames in the range",
    EXIT_NOBODY: "nobody was found in the whole video",
    EXIT_MODEL: "the checkpoint or the body model is unreadable or wrong",
    EXIT_WRITE: "an output cannot be written: its folder cannot be created or is not "
                "writable, the disk is full, an exporter failed",
    EXIT_ENVIRONMENT: "the environment lacks something: torch, mediapipe, CUDA, Ray, bpy, the "
                      "person detector, a reachable Ray cluster",
    EXIT_GPU_MEMORY: "out of GPU memory even at batch size 1",
    EXIT_SOME_FAILED: "batch: some videos failed (manifest.jsonl in --out-dir says which and "
                      "why)",
    EXIT_RESULT: "a result file (or the take .blend or rig file of retarget) is unreadable "
                 "or invalid: truncated, damaged, not a result, values out of range, or a "
                 "partial result that does not belong to this capture (--resume)",
    EXIT_NO_PROGRESS: "--resume made no progress (cancelled again before the end of the "
                      "partial result, or the video now ends before it): the partial result "
                      "is kept unchanged",
    EXIT_CANCELLED: "cancelled (SIGINT, SIGTERM, the cancel file OUT.cancel or the parent "
                    "process gone): a valid partial result was written, unless an existing "
                    "result at the output already went further; run again with --resume to go "
                    "on",
}


def describe():
    """The table as text, for --help."""
    return "\n".join(f"  {code:<4} {text}" for code, text in sorted(MEANINGS.items()))
