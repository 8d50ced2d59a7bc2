"""The two released HybrIK-X (SMPL-X) networks; state_dict names match the
official checkpoints exactly (``smplx_layer.*`` buffers excepted: the body
model lives outside the network, see :mod:`.smplx_layer`).

* :class:`HybrIKXRegHRNet48` is ``HRNetSMPLXCamKidReg`` (released as
  ``hybrikx_rle_hrnet.pth``, the model of the official SMPL-X demo): HRNet-W48
  features, 70 joints and the mouth top regressed directly by linear layers.
* :class:`HybrIKXHRNet48` is ``HRNetSMPLXCamKid`` (``hybrikx_hrnet.pth``):
  2.5-D heatmaps, a 64x64 uv map per joint from the highest-resolution branch
  and 64 depth logits per joint from that branch, pooled.

Both reuse the HRNet-W48 backbone of :mod:`.nets` (the official code builds
them from the same HRNet definition) and return raw tensors only; decoding,
camera and IK live in :mod:`.modelx`:

    feat  (B, 2048) pooled feature
    shape (B, 21) 10 betas, the children's coefficient, 10 expression
    phi   (B, 54, 2) twist (cos, sin), row k = joint k + 1, not normalised
    cam   (B, 1) camera scale (init_cam 0.9 included)
    sigma (B, 71) sigmoid uncertainty
    coord (B, 71, 3) regression model: u, v, d per point; rows 25-54 are the
          finger joints *relative to their wrist*, as the head predicts them
    heat_uv (B, 71, 64, 64), heat_z (B, 71, 64): heatmap model logits

Point order (71): the 55 SMPL-X joints, then the 16 leaves of
:data:`.smplx_layer.LEAF_NAMES`.
"""
import torch
from torch import nn

from .nets import HRNetW48Backbone, pool

NUM_POINTS = 71          # 55 joints + 16 leaves
NUM_TWISTS = 54
NUM_SHAPE = 21           # 10 betas + children's coefficient + 10 expression
HEATMAP_SIZE = 64
DEPTH_DIM = 64


class _FeatureTrunk(HRNetW48Backbone):
    """HRNet-W48 without the SMPL heatmap layer: ``generate_hm=False`` of the
    official builder (the regression model)."""

    def __init__(self):
        super().__init__()
        del self.final_layer

    def forward(self, x):
        return self.pooled_feature(self.branches_out(x))


class _HeatmapTrunk(HRNetW48Backbone):
    """The official ``PoseHighResolutionNet25d``: a 1x1 conv to one uv
    heatmap per joint on the 64 px branch, and a linear layer on that branch,
    average-pooled, to 64 depth logits per joint."""

    def __init__(self, num_points=NUM_POINTS, depth_dim=DEPTH_DIM):
        super().__init__()
        self.final_layer = nn.Conv2d(self.widths[0], num_points, 1)
        self.depth_layer = nn.Linear(self.widths[0], num_points * depth_dim)

    def forward(self, x):
        xs = self.branches_out(x)
        uv = self.final_layer(xs[0])
        z = self.depth_layer(pool(xs[0]))
        return uv, z, self.pooled_feature(xs)


class _HybrIKXHeads(nn.Module):
    feat_dim = 2048
    body_model = "smplx"

    def _common(self, feat):
        b = feat.shape[0]
        return {"feat": feat, "shape": self.decshape(feat),
                "phi": self.decphi(feat).reshape(b, NUM_TWISTS, 2),
                "cam": self.deccam(feat).reshape(b, -1) + self.init_cam}

    def _add_heads(self, num_sigma):
        self.decshape = nn.Linear(2048, NUM_SHAPE)
        self.decphi = nn.Linear(2048, NUM_TWISTS * 2)
        self.deccam = nn.Linear(2048, 1)
        self.decsigma = nn.Linear(2048, num_sigma)
        self.register_buffer("init_cam", torch.tensor([0.9]))


class HybrIKXRegHRNet48(_HybrIKXHeads):
    """``HRNetSMPLXCamKidReg``: direct coordinate regression with sigma."""

    arch = "hrnetx48_rle"

    def __init__(self):
        super().__init__()
        self.preact = _FeatureTrunk()
        self._add_heads(NUM_POINTS - 1)
        self.fc_coord = nn.Linear(2048, (NUM_POINTS - 1) * 3)
        self.fc_coord_mouthtop = nn.Linear(2048, 3)
        self.decsigma_mouthtop = nn.Linear(2048, 1)

    def forward(self, x):
        feat = self.preact(x)
        b = feat.shape[0]
        out = self._common(feat)
        coord = torch.cat([self.fc_coord(feat).reshape(b, NUM_POINTS - 1, 3),
                           self.fc_coord_mouthtop(feat).reshape(b, 1, 3)], 1)
        sigma = torch.cat([self.decsigma(feat).sigmoid(),
                           self.decsigma_mouthtop(feat).sigmoid()], 1)
        out.update(coord=coord, sigma=sigma)
        return out


class HybrIKXHRNet48(_HybrIKXHeads):
    """``HRNetSMPLXCamKid``: 2.5-D heatmaps (uv map + depth bins) with sigma."""

    arch = "hrnetx48"

    def __init__(self):
        super().__init__()
        self.preact = _HeatmapTrunk()
        self._add_heads(NUM_POINTS)

    def forward(self, x):
        uv, z, feat = self.preact(x)
        b = feat.shape[0]
        out = self._common(feat)
        out.update(heat_uv=uv.reshape(b, NUM_POINTS, HEATMAP_SIZE, HEATMAP_SIZE),
                   heat_z=z.reshape(b, NUM_POINTS, DEPTH_DIM),
                   sigma=self.decsigma(feat).sigmoid())
        return out


ARCHITECTURES_X = {"hrnetx48_rle": HybrIKXRegHRNet48, "hrnetx48": HybrIKXHRNet48}


def build_network_x(arch):
    try:
        return ARCHITECTURES_X[arch]()
    except KeyError:
        raise ValueError(f"unknown HybrIK-X architecture '{arch}'; known: "
                         f"{', '.join(ARCHITECTURES_X)}") from None
