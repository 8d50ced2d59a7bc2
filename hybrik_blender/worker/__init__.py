"""Torch side of hybrik-blender: the HybrIK networks, decoding and the hybrid IK.

Never imported by Blender code. Import the submodules you need:

* :mod:`.nets` - ResNet-34 and HRNet-W48 HybrIK architectures;
* :mod:`.checkpoint` - loading official checkpoints;
* :mod:`.preprocess` - person box to normalised 256x256 crop;
* :mod:`.decode` - heatmaps to uvd, camera model, flip test;
* :mod:`.ik` - hybrid analytical IK (and the naive solver), FK and skinning;
* :mod:`.model` - the whole pipeline, crops to SMPL parameters;
* :mod:`.synthetic` - the deterministic weight recipe used by tests and benchmarks.
"""
