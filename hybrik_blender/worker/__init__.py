"""Torch side of hybrik-blender: video, detection, networks, IK, capture.

Never imported by Blender code. Runs in its own Python process
(``python -m hybrik_blender.worker``). Layout:

* :mod:`.video` - streamed decoding of video files and image folders;
* :mod:`.detect` - finding and tracking people;
* :mod:`.landmarks` - the mediapipe backend: landmarks to SMPL;
* :mod:`.hybrik` - the HybrIK networks, checkpoints, crops, decoding and the
  hybrid IK;
* :mod:`.capture` - one video to one result file; :mod:`.batch` - many
  videos on Ray; :mod:`.cli` - the command line and its exit codes;
* :mod:`.synthetic` - the deterministic weight recipe used by tests and
  benchmarks.
"""
