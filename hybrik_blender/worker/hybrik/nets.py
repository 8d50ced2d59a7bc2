"""The two released HybrIK SMPL architectures (state_dict names match the
official checkpoints exactly).

Both networks return raw tensors only; decoding lives in :mod:`.decode`:

    heat  (B, 29*64, 64, 64) heatmap logits, channel = joint*64 + depth bin
    feat  (B, C) globally pooled feature (512 for ResNet-34, 2048 for HRNet)
    shape (B, 10) betas, phi (B, 23, 2), cam (B, 3 or 1) incl. init_cam,
    sigma (B, 29) sigmoid uncertainty (or None when the head is absent)
"""
import torch
from torch import nn
import torch.nn.functional as F

NUM_JOINTS = 29
DEPTH_DIM = 64


def pool(f):
    """Global average pool (B, C, H, W) -> (B, C), accumulated and returned in
    float32 for a reduced-precision input (float64 stays float64)."""
    if f.dtype in (torch.float16, torch.bfloat16):
        f = f.float()
    return f.mean((2, 3))


def _bn(c):
    return nn.BatchNorm2d(c, momentum=0.1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + skip, inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        return F.relu(self.bn3(self.conv3(y)) + skip, inplace=True)


def _make_layer(block, cin, planes, blocks, stride=1):
    down = None
    if stride != 1 or cin != planes * block.expansion:
        down = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                             _bn(planes * block.expansion))
    layers = [block(cin, planes, stride, down)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


# --- ResNet-34 ---------------------------------------------------------------

class ResNet34Backbone(nn.Module):
    """torchvision's resnet34 layout without avgpool/fc; 256 px -> 512 x 8 x 8."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = _bn(64)
        self.layer1 = _make_layer(BasicBlock, 64, 64, 3)
        self.layer2 = _make_layer(BasicBlock, 64, 128, 4, 2)
        self.layer3 = _make_layer(BasicBlock, 128, 256, 6, 2)
        self.layer4 = _make_layer(BasicBlock, 256, 512, 3, 2)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class HybrIKResNet34Cam(nn.Module):
    """``Simple3DPoseBaseSMPLCam``: ResNet-34, deconv heatmap head, fc regressors."""

    arch = "res34_cam"
    feat_dim = 512

    def __init__(self, with_sigma=True):
        super().__init__()
        self.preact = ResNet34Backbone()
        layers = []
        cin = 512
        for _ in range(3):
            layers += [nn.ConvTranspose2d(cin, 256, 4, 2, 1, output_padding=0, bias=False),
                       _bn(256), nn.ReLU(inplace=True)]
            cin = 256
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(256, NUM_JOINTS * DEPTH_DIM, 1)
        self.fc1 = nn.Linear(512, 1024)
        self.drop1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(1024, 1024)
        self.drop2 = nn.Dropout(0.5)
        self.decshape = nn.Linear(1024, 10)
        self.decphi = nn.Linear(1024, 46)
        self.deccam = nn.Linear(1024, 3)
        self.decsigma = nn.Linear(1024, NUM_JOINTS) if with_sigma else None
        self.register_buffer("init_shape", torch.zeros(10))
        self.register_buffer("init_cam", torch.tensor([0.9, 0.0, 0.0]))

    def forward(self, x):
        f = self.preact(x)
        heat = self.final_layer(self.deconv_layers(f))
        feat = pool(f)
        h = self.drop2(self.fc2(self.drop1(self.fc1(feat))))
        return _heads(self, heat, feat, h)


def _heads(net, heat, feat, h):
    b = h.shape[0]
    shape = net.decshape(h) + net.init_shape
    phi = net.decphi(h).reshape(b, 23, 2)
    cam = net.deccam(h) + net.init_cam
    sigma = None if net.decsigma is None else torch.sigmoid(net.decsigma(h))
    return {"heat": heat, "feat": feat, "shape": shape, "phi": phi, "cam": cam, "sigma": sigma}


# --- HRNet-W48 -----------------------------------------------------------------

def _conv_bn(cin, cout, k, stride, relu):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), _bn(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """One multi-resolution module: parallel BasicBlock branches, then exchange."""

    def __init__(self, widths, blocks=4):
        super().__init__()
        n = len(widths)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(w, w) for _ in range(blocks)]) for w in widths)
        fuse = []
        for i in range(n):
            row = []
            for j in range(n):
                if j > i:    # lower resolution: 1x1 conv, then nearest upsampling
                    row.append(nn.Sequential(nn.Conv2d(widths[j], widths[i], 1, bias=False),
                                             _bn(widths[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(None)
                else:        # higher resolution: i - j strided 3x3 convs
                    steps = [_conv_bn(widths[j], widths[j], 3, 2, True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(widths[j], widths[i], 3, 2, False))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)

    def forward(self, xs):
        xs = [b(x) for b, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if j == i else row[j](xs[j]))
            out.append(F.relu(y))
        return out


class HRNetW48Backbone(nn.Module):
    """Pose-HRNet-W48 with the heatmap layer and the classification-style
    feature head (incre / downsamp / final_feat) used by HybrIK."""

    widths = (48, 96, 192, 384)

    def __init__(self):
        super().__init__()
        w = self.widths
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = _bn(64)
        self.layer1 = _make_layer(Bottleneck, 64, 64, 4)
        self.transition1 = nn.ModuleList([
            _conv_bn(256, w[0], 3, 1, True),
            nn.Sequential(_conv_bn(256, w[1], 3, 2, True))])
        self.stage2 = nn.Sequential(HRModule(w[:2]))
        self.transition2 = nn.ModuleList([None, None, nn.Sequential(_conv_bn(w[1], w[2], 3, 2, True))])
        self.stage3 = nn.Sequential(*[HRModule(w[:3]) for _ in range(4)])
        self.transition3 = nn.ModuleList([None, None, None,
                                          nn.Sequential(_conv_bn(w[2], w[3], 3, 2, True))])
        self.stage4 = nn.Sequential(*[HRModule(w) for _ in range(3)])
        self.final_layer = nn.Conv2d(w[0], NUM_JOINTS * DEPTH_DIM, 1)
        head = (32, 64, 128, 256)
        self.incre_modules = nn.ModuleList(
            _make_layer(Bottleneck, w[i], head[i], 1) for i in range(4))
        self.downsamp_modules = nn.ModuleList(
            nn.Sequential(nn.Conv2d(head[i] * 4, head[i + 1] * 4, 3, 2, 1),
                          _bn(head[i + 1] * 4), nn.ReLU(inplace=True)) for i in range(3))
        self.final_feat_layer = nn.Sequential(nn.Conv2d(1024, 2048, 1), _bn(2048),
                                              nn.ReLU(inplace=True))

    def branches_out(self, x):
        """The four stage-4 branches (64, 32, 16, 8 px for a 256 px input)."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        x = self.layer1(x)
        xs = [t(x) for t in self.transition1]
        xs = self.stage2(xs)
        xs = [xs[0], xs[1], self.transition2[2](xs[-1])]
        xs = self.stage3(xs)
        xs = [xs[0], xs[1], xs[2], self.transition3[3](xs[-1])]
        return self.stage4(xs)

    def pooled_feature(self, xs):
        """The classification head on the branches: the pooled 2048-d feature."""
        y = self.incre_modules[0](xs[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](xs[i + 1]) + down(y)
        y = self.final_feat_layer(y)
        return y.mean((2, 3))

    def forward(self, x):
        xs = self.branches_out(x)
        return self.final_layer(xs[0]), self.pooled_feature(xs)


class HybrIKHRNet48Cam(nn.Module):
    """``HRNetSMPLCam``: HRNet-W48, linear heads on the 2048-d feature."""

    arch = "hrnet48_cam"
    feat_dim = 2048

    def __init__(self, with_sigma=True):
        super().__init__()
        self.preact = HRNetW48Backbone()
        self.decshape = nn.Linear(2048, 10)
        self.decphi = nn.Linear(2048, 46)
        self.deccam = nn.Linear(2048, 1)
        self.decsigma = nn.Linear(2048, NUM_JOINTS) if with_sigma else None
        self.register_buffer("init_shape", torch.zeros(10))
        self.register_buffer("init_cam", torch.tensor([0.9]))

    def forward(self, x):
        heat, feat = self.preact(x)
        return _heads(self, heat, feat, feat)


ARCHITECTURES = {"res34_cam": HybrIKResNet34Cam, "hrnet48_cam": HybrIKHRNet48Cam}


def build_network(arch, with_sigma=True):
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture '{arch}'; known: {', '.join(ARCHITECTURES)}") from None
    return cls(with_sigma=with_sigma)
