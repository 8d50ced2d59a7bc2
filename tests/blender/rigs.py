"""Target rigs that were not built from SMPL, and anatomy measured on them.

* BVH text in the layouts big motion libraries write, imported with
  Blender's own BVH importer:
  - MIXAMO: ``mixamorig:`` names, world-aligned joint frames (zero rotation
    is the T-pose), fingers, eyes and a HeadTop_End joint, the root at the
    origin (the feet below the floor at rest), centimetres;
  - LAFAN1: Ubisoft LaFAN1 names (``LeftToe``), every joint's offset to its
    child along its own +X, so with zero rotations every bone lies along
    +X (the rest pose is folded up; only the motion makes it a person),
    end sites at zero offset;
  - MOCAP: Hips/Chest/Chest2/LeftCollar/LeftShoulder(upper arm)/LeftElbow/
    LeftWrist/LeftHip(thigh)/LeftKnee/LeftAnkle, collars and neck starting
    at one point, no toes (MocapBank, CMU-MotionBuilder style);
  - RIGIFY_BVH: Rigify names in metres with a ``pelvis`` root carrying the
    thighs and a zero-length ``spine`` child, standing on the floor at rest.
  The joint layouts and proportions follow real files of those libraries;
  the numbers are written here.
* Blender's own human metarig (Rigify add-on): A-pose arms, bent elbows and
  knees, curled fingers, a face with eyes; and the rig Rigify generates
  from it (controls, MCH helpers with constraints and drivers, ORG and DEF
  bones).
* An SMPL-X-shaped source (55 bones) built like the SMPL character, on the
  synthetic SMPL-X model's rest joints.

Each rig comes with its *anatomy*: for each landmark the bone whose head it
is, and the world direction of the face at rest, known from how the rig was
made (never from the retarget's calibration). :func:`anatomy` measures hip
line, shoulder line, torso up, head facing and the lowest foot point of any
rig per frame as Blender evaluates it.
"""
import math
import os
import tempfile

import bpy
import numpy as np
from mathutils import Matrix

from hybrik_blender.core.retarget.euler import matrix_to_euler
from hybrik_blender.core.rotations import axis_angle_to_matrix

# --- a reference person: BVH frame (Y up, facing +Z, left +X), centimetres,
# T-pose, soles at y = 0.

_L = {  # left side and centre
    "hips": (0.0, 100.0, 0.0), "spine": (0.0, 109.9, -1.2), "spine1": (0.0, 121.6, -2.6),
    "spine2": (0.0, 134.9, -4.3), "neck": (0.0, 150.0, -3.5), "head": (0.0, 160.3, -0.3),
    "head_top": (0.0, 178.8, 6.3), "eye": (2.95, 168.0, 8.8),
    "collar": (6.1, 144.0, -3.6), "arm": (18.8, 143.7, -6.2), "forearm": (46.1, 142.7, -7.6),
    "hand": (73.7, 142.0, -6.0),
    "upleg": (9.1, 93.3, -0.1), "leg": (9.1, 50.6, -1.8), "foot": (8.6, 8.5, -5.2),
    "toe": (9.0, 2.0, 7.4), "toe_end": (9.0, 1.0, 15.4),
}
_FINGER_OFFSETS = {  # from the hand, then each phalanx from the previous joint
    "Middle": [(12.66, -1.40, 0.95), (3.61, -0.17, 0.08), (3.40, -0.63, 0.11), (3.62, -0.65, 0.12)],
    "Thumb": [(3.33, -2.05, 3.58), (3.49, -1.48, 2.85), (3.41, -1.77, 2.11), (2.72, -1.16, 1.79)],
    "Index": [(11.97, -1.11, 3.73), (3.84, -0.64, -0.03), (3.33, -0.74, -0.01), (2.97, -0.80, 0.0)],
    "Ring": [(12.17, -1.68, -1.28), (3.59, -0.24, -0.08), (3.29, -0.33, -0.06),
             (3.54, -0.92, -0.02)],
    "Pinky": [(11.05, -2.19, -3.80), (4.12, -0.30, 0.12), (2.58, -0.26, 0.08), (2.90, -0.34, 0.10)],
}
SIDED = ("eye", "collar", "arm", "forearm", "hand", "upleg", "leg", "foot", "toe", "toe_end")


def person():
    """{landmark: (3,) cm} of the reference person, both sides and fingers."""
    out = {}
    for k, v in _L.items():
        v = np.array(v, float)
        if k in SIDED:
            out[k + ".L"] = v
            out[k + ".R"] = v * [-1, 1, 1]
        else:
            out[k] = v
    for side, sign in (("L", 1.0), ("R", -1.0)):
        for finger, offs in _FINGER_OFFSETS.items():
            p = out["hand." + side]
            for k, off in enumerate(offs):
                p = p + np.array(off) * [sign, 1, 1]
                out[f"{finger}{k + 1}.{side}" if k < 3 else f"{finger}_end.{side}"] = p
    return out


UP, FRONT, LEFT = np.eye(3)[1], np.eye(3)[2], np.eye(3)[0]


def _frame_x(x, z_hint):
    x = x / np.linalg.norm(x)
    z = z_hint - np.dot(z_hint, x) * x
    z /= np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], axis=1)


class Joint:
    def __init__(self, name, key, parent, end=None, frame=None, channels="ZYX"):
        self.name, self.key, self.parent, self.end = name, key, parent, end
        self.frame = np.eye(3) if frame is None else frame
        self.channels = channels  # as listed in the file: "ZYX" = Zrot Yrot Xrot


def _sided_joints(spec, sides=("L", "R"), tags=("Left", "Right")):
    out = []
    for side, tag in zip(sides, tags):
        for name, key, parent, end in spec:
            out.append((name.format(S=tag, s=side), key.format(s=side),
                        parent.format(S=tag, s=side), end.format(s=side) if end else None))
    return out


def mixamo_layout(prefix="mixamorig:"):
    spec = [("Hips", "hips", None, None), ("Spine", "spine", "Hips", None),
            ("Spine1", "spine1", "Spine", None), ("Spine2", "spine2", "Spine1", None),
            ("Neck", "neck", "Spine2", None), ("Head", "head", "Neck", None),
            ("HeadTop_End", "head_top", "Head", "head_top")]
    spec += _sided_joints([("{S}Eye", "eye.{s}", "Head", "eye.{s}"),
                           ("{S}Shoulder", "collar.{s}", "Spine2", None),
                           ("{S}Arm", "arm.{s}", "{S}Shoulder", None),
                           ("{S}ForeArm", "forearm.{s}", "{S}Arm", None),
                           ("{S}Hand", "hand.{s}", "{S}ForeArm", None)])
    for side, tag in (("L", "Left"), ("R", "Right")):
        for finger in _FINGER_OFFSETS:
            parent = f"{tag}Hand"
            for k in (1, 2, 3):
                name = f"{tag}Hand{finger}{k}"
                spec.append((name, f"{finger}{k}.{side}", parent,
                             f"{finger}_end.{side}" if k == 3 else None))
                parent = name
    spec += _sided_joints([("{S}UpLeg", "upleg.{s}", "Hips", None),
                           ("{S}Leg", "leg.{s}", "{S}UpLeg", None),
                           ("{S}Foot", "foot.{s}", "{S}Leg", None),
                           ("{S}ToeBase", "toe.{s}", "{S}Foot", "toe_end.{s}")])
    joints = [Joint(prefix + n, k, prefix + p if p else None, e, channels="ZYX")
              for n, k, p, e in spec]
    return joints, dict(root_offset="origin", units="cm")


def lafan1_layout():
    p = person()
    spec = [("Hips", "hips", None, "spine"),
            ("Spine", "spine", "Hips", "spine1"), ("Spine1", "spine1", "Spine", "spine2"),
            ("Spine2", "spine2", "Spine1", "neck"), ("Neck", "neck", "Spine2", "head"),
            ("Head", "head", "Neck", "head_top")]
    spec += _sided_joints([("{S}Shoulder", "collar.{s}", "Spine2", "arm.{s}"),
                           ("{S}Arm", "arm.{s}", "{S}Shoulder", "forearm.{s}"),
                           ("{S}ForeArm", "forearm.{s}", "{S}Arm", "hand.{s}"),
                           ("{S}Hand", "hand.{s}", "{S}ForeArm", "Middle1.{s}"),
                           ("{S}UpLeg", "upleg.{s}", "Hips", "leg.{s}"),
                           ("{S}Leg", "leg.{s}", "{S}UpLeg", "foot.{s}"),
                           ("{S}Foot", "foot.{s}", "{S}Leg", "toe.{s}"),
                           ("{S}Toe", "toe.{s}", "{S}Foot", "toe_end.{s}")])
    joints = []
    for name, key, parent, aim in spec:
        x = p[aim] - p[key]
        if name.endswith(("Arm", "ForeArm", "Hand", "Shoulder")):
            hint = -UP if name.startswith("Left") else UP
        else:
            hint = LEFT
        if name == "Head":  # a level head: x up, y to the face, z left
            x = UP
        # end sites at zero offset, as LaFAN1 writes them
        end = key if name in ("Head", "LeftHand", "RightHand", "LeftToe", "RightToe") else None
        joints.append(Joint(name, key, parent, end, frame=_frame_x(x, hint)))
    return joints, dict(root_offset="origin", units="cm")


def mocap_layout():
    spec = [("Hips", "hips", None, None), ("Chest", "spine", "Hips", None),
            ("Chest2", "spine2", "Chest", None), ("Neck", "chest_top", "Chest2", None),
            ("Head", "head", "Neck", "head_top")]
    spec += _sided_joints([("{S}Collar", "chest_top", "Chest2", None),
                           ("{S}Shoulder", "arm.{s}", "{S}Collar", None),
                           ("{S}Elbow", "forearm.{s}", "{S}Shoulder", None),
                           ("{S}Wrist", "hand.{s}", "{S}Elbow", "Middle_end.{s}"),
                           ("{S}Hip", "upleg.{s}", "Hips", None),
                           ("{S}Knee", "leg.{s}", "{S}Hip", None),
                           ("{S}Ankle", "foot.{s}", "{S}Knee", "toe_end.{s}")])
    joints = [Joint(n, k, p, e, channels="ZXY") for n, k, p, e in spec]
    return joints, dict(root_offset="origin", units="cm")


def rigify_bvh_layout():
    spec = [("pelvis", "hips", None, None), ("spine", "hips", "pelvis", None),
            ("spine.001", "spine2", "spine", None), ("neck", "neck", "spine.001", None),
            ("face", "head", "neck", "head_top")]
    spec += _sided_joints([("shoulder.{s}", "collar.{s}", "spine.001", None),
                           ("upper_arm.{s}", "arm.{s}", "shoulder.{s}", None),
                           ("forearm.{s}", "forearm.{s}", "upper_arm.{s}", None),
                           ("hand.{s}", "hand.{s}", "forearm.{s}", "Middle_end.{s}"),
                           ("thigh.{s}", "upleg.{s}", "pelvis", None),
                           ("shin.{s}", "leg.{s}", "thigh.{s}", None),
                           ("foot.{s}", "foot.{s}", "shin.{s}", None),
                           ("toe.{s}", "toe.{s}", "foot.{s}", "toe_end.{s}")],
                          tags=("L", "R"))
    joints = [Joint(n, k, p, e, channels="XYZ") for n, k, p, e in spec]
    return joints, dict(root_offset="standing", units="m")


LAYOUTS = {"MIXAMO": mixamo_layout, "LAFAN1": lafan1_layout, "MOCAP": mocap_layout,
           "RIGIFY_BVH": rigify_bvh_layout}


def _points():
    p = person()
    p["chest_top"] = np.array([0.0, 148.0, -3.6])
    return p


def bvh_text(layout, units=None, frames=2, seed=0, fps=30.0):
    """BVH text of the reference person in `layout`: frame 1 is the T-pose,
    later frames bend every joint a little (so an imported rig is "left in a
    pose"). Returns (text, joints, scale to metres)."""
    joints, opts = LAYOUTS[layout]()
    units = units or opts["units"]
    k = 1.0 if units == "cm" else 0.01
    p = _points()
    by_name = {j.name: j for j in joints}
    children = {j.name: [c for c in joints if c.parent == j.name] for j in joints}
    rng = np.random.default_rng(seed)
    lines = ["HIERARCHY"]

    def chan(order):
        return " ".join(f"{c}rotation" for c in order)

    def write(j, depth):
        ind = "\t" * depth
        par = by_name.get(j.parent)
        if par is None:
            off = p[j.key] * k if opts["root_offset"] == "standing" else np.zeros(3)
            lines.append(f"{ind}ROOT {j.name}")
        else:
            off = par.frame.T @ (p[j.key] - p[par.key]) * k
            lines.append(f"{ind}JOINT {j.name}")
        lines.append(ind + "{")
        lines.append(f"{ind}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if par is None:
            lines.append(f"{ind}\tCHANNELS 6 Xposition Yposition Zposition {chan(j.channels)}")
        else:
            lines.append(f"{ind}\tCHANNELS 3 {chan(j.channels)}")
        for c in children[j.name]:
            write(c, depth + 1)
        if j.end is not None:
            e = j.frame.T @ (p[j.end] - p[j.key]) * k
            lines.extend([f"{ind}\tEnd Site", ind + "\t{", f"{ind}\t\tOFFSET {e[0]:.6f} "
                          f"{e[1]:.6f} {e[2]:.6f}", ind + "\t}"])
        lines.append(ind + "}")

    root = joints[0]
    write(root, 0)
    lines += ["MOTION", f"Frames: {frames}", f"Frame Time: {1.0 / fps:.7f}"]
    for f in range(frames):
        row = list(p[root.key] * k)
        for j in joints:
            par = by_name.get(j.parent)
            local = j.frame if par is None else par.frame.T @ j.frame
            if f:
                local = local @ axis_angle_to_matrix(rng.normal(0, 0.3, 3))
            # channels listed Z Y X mean R = Rz Ry Rx: Blender's order 'XYZ'
            ang = np.degrees(matrix_to_euler(local, j.channels[::-1]))
            row += [ang["XYZ".index(c)] for c in j.channels]
        lines.append(" ".join(f"{v:.6f}" for v in row))
    return "\n".join(lines) + "\n", joints, k / 100.0


def import_bvh(layout, units=None, frames=2, seed=0, name=None):
    """Import the layout's BVH with Blender's importer (default options:
    Y up, -Z forward, scale 1, native rotation modes). Returns (rig, info)
    where info knows the rig's anatomy."""
    units = units or LAYOUTS[layout]()[1]["units"]
    text, joints, to_m = bvh_text(layout, units, frames, seed)
    folder = tempfile.mkdtemp(prefix="hybrik-bvh-")
    path = os.path.join(folder, f"{name or layout.lower()}.bvh")
    with open(path, "w") as fh:
        fh.write(text)
    bpy.ops.import_anim.bvh(filepath=path)
    rig = bpy.context.view_layer.objects.active
    bpy.context.scene.frame_set(frames)  # left in the last, bent pose
    return rig, bvh_anatomy(layout, joints, units)


# Blender's BVH importer turns BVH (Y up, -Z forward... ) into Blender axes:
# (x, y, z) -> (x, -z, y).
BVH_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])


def bvh_anatomy(layout, joints, units):
    by_key = {}
    for j in joints:
        by_key.setdefault(j.key, j.name)
    names = {j.name: j for j in joints}
    pick = {"MIXAMO": ("mixamorig:{S}UpLeg", "mixamorig:{S}Arm", "mixamorig:Head",
                       "mixamorig:{S}Foot", "mixamorig:{S}ToeBase", "mixamorig:{S}Leg"),
            "LAFAN1": ("{S}UpLeg", "{S}Arm", "Head", "{S}Foot", "{S}Toe", "{S}Leg"),
            "MOCAP": ("{S}Hip", "{S}Shoulder", "Head", "{S}Ankle", None, "{S}Knee"),
            "RIGIFY_BVH": ("thigh.{S}", "upper_arm.{S}", "face", "foot.{S}", "toe.{S}",
                           "shin.{S}")}[layout]
    tags = ("L", "R") if layout == "RIGIFY_BVH" else ("Left", "Right")
    hip, sh, head, ankle, toe, knee = pick
    head_j = names[head]
    # the face at rest: the person's front carried by the head joint's frame
    # (world-aligned layouts: the front itself)
    face_rest = BVH_TO_BLENDER @ (head_j.frame.T @ FRONT)
    feet = {f"{s}_ankle": ankle.format(S=t) for s, t in zip(("left", "right"), tags)}
    if toe:
        feet.update({f"{s}_foot": toe.format(S=t) for s, t in zip(("left", "right"), tags)})
    p = _points()
    stand = min(p[names[f].key][1] for f in feet.values())
    scale = 1.0 if units == "cm" else 0.01
    return Anatomy(hips=tuple(hip.format(S=t) for t in tags),
                   shoulders=tuple(sh.format(S=t) for t in tags), head=head,
                   face_rest=face_rest, feet=feet,
                   knees=tuple(knee.format(S=t) for t in tags),
                   standing_height=stand, units_per_cm=scale)


class Anatomy:
    """Which bones carry the landmarks, the face direction at rest (world,
    for an unrotated object) and the lowest foot point's height when the rig
    stands (cm of the reference person; scaled by the rig's units)."""

    def __init__(self, hips, shoulders, head, face_rest, feet, knees, standing_height,
                 units_per_cm=1.0):
        self.hips, self.shoulders, self.head = hips, shoulders, head
        self.face_rest = np.asarray(face_rest, float) / np.linalg.norm(face_rest)
        # {SMPL foot point: bone}: ankles, and toes where the rig has them
        self.feet, self.knees = dict(feet), knees
        self.standing_height = standing_height
        self.units_per_cm = units_per_cm

    def foot_height_world(self, rig):
        """Standing foot height in world units (object scale included)."""
        s = float(np.linalg.norm(np.array(rig.matrix_world)[:3, 0]))
        return self.standing_height * self.units_per_cm * s


SMPL_ANATOMY = dict(hips=("left_hip", "right_hip"), shoulders=("left_shoulder", "right_shoulder"),
                    head="head", face_rest=(0.0, -1.0, 0.0),
                    feet={n: n for n in ("left_ankle", "right_ankle", "left_foot", "right_foot")},
                    knees=("left_knee", "right_knee"))


def smpl_anatomy(rig, mesh=None, feet=None):
    """The anatomy of a hybrik-blender SMPL character; its standing foot
    height (over the foot points `feet`, default ankles and toes) from its
    mesh's lowest vertex at rest."""
    stand = 0.0
    if mesh is not None:
        co = np.empty(3 * len(mesh.data.vertices))
        mesh.data.vertices.foreach_get("co", co)
        mw = np.array(mesh.matrix_world)
        low = (co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3])[:, 2].min()
        feet = [np.array(rig.matrix_world) @ np.append(rig.data.bones[n].head_local, 1.0)
                for n in (feet or SMPL_ANATOMY["feet"])]
        stand = min(f[2] for f in feet) - low
    return Anatomy(standing_height=stand, **SMPL_ANATOMY)


def metarig(apose_extra=0.0):
    """Blender's human metarig (the Rigify add-on's)."""
    import addon_utils
    addon_utils.enable("rigify", default_set=True)
    bpy.ops.object.armature_human_metarig_add()
    rig = bpy.context.view_layer.objects.active
    return rig, Anatomy(hips=("thigh.L", "thigh.R"), shoulders=("upper_arm.L", "upper_arm.R"),
                        head="spine.006", face_rest=(0.0, -1.0, 0.0),
                        feet={"left_ankle": "foot.L", "right_ankle": "foot.R",
                              "left_foot": "toe.L", "right_foot": "toe.R"},
                        knees=("shin.L", "shin.R"),
                        standing_height=None)


# --- measuring -------------------------------------------------------------

def evaluate(rig, bones, frames, subframe=0.0):
    """World head positions (F, B, 3) and rotations (F, B, 3, 3) of pose
    bones as Blender evaluates them."""
    scene = bpy.context.scene
    mw = np.array(rig.matrix_world)
    heads = np.empty((len(frames), len(bones), 3))
    rots = np.empty((len(frames), len(bones), 3, 3))
    for i, f in enumerate(frames):
        scene.frame_set(int(f), subframe=subframe)
        for j, n in enumerate(bones):
            m = mw @ np.array(rig.pose.bones[n].matrix)
            heads[i, j] = m[:3, 3]
            r = m[:3, :3]
            rots[i, j] = r / np.linalg.norm(r, axis=0, keepdims=True)
    return heads, rots


def rest_rotation(rig, bone):
    m = np.array(rig.matrix_world) @ np.array(rig.data.bones[bone].matrix_local)
    r = m[:3, :3]
    return r / np.linalg.norm(r, axis=0, keepdims=True)


def anatomy(rig, an, frames, subframe=0.0, feet=None):
    """Per frame: hip line, shoulder line, torso up, face direction (unit
    vectors) and the lowest foot point's height above the rig's floor (over
    the foot points named in `feet`, default all the rig has)."""
    feet = list(an.feet) if feet is None else feet
    bones = list(an.hips) + list(an.shoulders) + [an.head] + [an.feet[k] for k in feet]
    heads, rots = evaluate(rig, bones, frames, subframe)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    hip = unit(heads[:, 0] - heads[:, 1])
    sh = unit(heads[:, 2] - heads[:, 3])
    up = unit(0.5 * (heads[:, 2] + heads[:, 3]) - 0.5 * (heads[:, 0] + heads[:, 1]))
    r0 = rest_rotation(rig, an.head)
    face = np.einsum("fij,jk,k->fi", rots[:, 4], r0.T, an.face_rest)
    floor = float(np.array(rig.matrix_world)[2, 3])
    low = heads[:, 5:, 2].min(axis=1) - floor
    return dict(hip=hip, shoulder=sh, up=up, face=face, low=low)


def leg_length(rig, an):
    mw = np.array(rig.matrix_world)
    out = []
    for hip, knee, side in zip(an.hips, an.knees, ("left", "right")):
        ankle_side = an.feet[f"{side}_ankle"]
        pts = [mw @ np.append(rig.data.bones[n].head_local, 1.0) for n in (hip, knee, ankle_side)]
        out.append(np.linalg.norm(pts[1][:3] - pts[0][:3])
                   + np.linalg.norm(pts[2][:3] - pts[1][:3]))
    return float(np.mean(out))


def angle_deg(a, b):
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1),
                                 np.sum(a * b, axis=-1)))


def compare(src, src_an, tgt, tgt_an, frames, subframe=0.0, scale=1.0,
            src_stand=0.0, tgt_stand=0.0):
    """Anatomy errors of tgt against src: degrees per frame for each line,
    and the foot height error as a fraction of the target's leg length."""
    feet = [k for k in tgt_an.feet if k in src_an.feet]
    a = anatomy(src, src_an, frames, subframe, feet)
    b = anatomy(tgt, tgt_an, frames, subframe, feet)
    out = {k: angle_deg(a[k], b[k]) for k in ("hip", "shoulder", "up", "face")}
    legs = leg_length(tgt, tgt_an)
    out["foot"] = np.abs((b["low"] - tgt_stand) - scale * (a["low"] - src_stand)) / legs
    return out


def set_rolls(rig, seed=0):
    """Random bone rolls (an odd rig): rest positions unchanged."""
    rng = np.random.default_rng(seed)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode='EDIT')
    for eb in rig.data.edit_bones:
        eb.roll = float(rng.uniform(-math.pi, math.pi))
    bpy.ops.object.mode_set(mode='OBJECT')


def set_world(rig, matrix):
    rig.matrix_world = Matrix(np.asarray(matrix, float).tolist())
    bpy.context.view_layer.update()


def to_fbx_axes(rig, matrix):
    """Make the rig look like an FBX import: armature data Y-up (turned -90
    degrees about X), the object matrix `matrix` (e.g. 0.01 scale and +90
    degrees about X) standing it up again."""
    rig.data.transform(Matrix.Rotation(-math.pi / 2, 4, 'X'))
    set_world(rig, matrix)


# --- an SMPL-X-shaped source (the smplx character's bone conventions) -------

def smplx_rest():
    """(55, 3) rest joints and (10, 3) finger tips of the synthetic SMPL-X
    model, in Blender coordinates (tests/data, from J_regressor @ v_template)."""
    from hybrik_blender.core.blender_space import SMPL_TO_BLENDER
    from tests.conftest import DATA
    with np.load(os.path.join(DATA, "synthetic_smplx_rest_skeleton.npz")) as d:
        return d["joints"] @ SMPL_TO_BLENDER.T, d["finger_tips"] @ SMPL_TO_BLENDER.T, \
            d["head_top"] @ SMPL_TO_BLENDER.T


def smplx_source(rotmats, root, fps=30.0, name="SMPLX_take"):
    """A 55-bone SMPL-X armature built like the SMPL character (heads at the
    joints, tails at the child joint or finger tip, Z rolled to the front)
    and keyed with local rotations (N, 55, 3, 3) and root positions (N, 3)
    through the exact SMPL -> Blender bone conversion."""
    from hybrik_blender.blender.keyframes import ActionWriter
    from hybrik_blender.core.blender_space import bone_basis, homogeneous
    from hybrik_blender.core.body.skeleton import SMPLX_JOINT_NAMES, SMPLX_PARENTS
    from hybrik_blender.core.rotations import make_quaternions_continuous, matrix_to_quaternion
    joints, tips, head_top = smplx_rest()
    tails = np.empty_like(joints)
    first_child = {}
    for i, p in enumerate(SMPLX_PARENTS):
        if p >= 0:
            first_child.setdefault(int(p), i)
    first_child.update({9: 12, 20: 28, 21: 43})  # spine3 -> neck, wrists -> middle1
    for i in range(55):
        c = first_child.get(i)
        tails[i] = joints[c] if c is not None else joints[i] + [0.0, -0.03, 0.0]
    tails[15] = head_top
    tails[[27, 30, 33, 36, 39, 42, 45, 48, 51, 54]] = tips
    tails[[7, 8]] = joints[[10, 11]]
    tails[[10, 11]] = joints[[10, 11]] + [0.0, -0.08, -0.03]
    data = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode='EDIT')
    for i, n in enumerate(SMPLX_JOINT_NAMES):
        eb = data.edit_bones.new(n)
        eb.head, eb.tail = joints[i], tails[i]
        d = (tails[i] - joints[i]) / np.linalg.norm(tails[i] - joints[i])
        eb.align_roll((0, 0, 1) if abs(d[1]) > 0.9 else (0, -1, 0))
    for i, n in enumerate(SMPLX_JOINT_NAMES):
        if SMPLX_PARENTS[i] >= 0:
            data.edit_bones[n].parent = data.edit_bones[SMPLX_JOINT_NAMES[SMPLX_PARENTS[i]]]
    bpy.ops.object.mode_set(mode='OBJECT')
    rest = np.array([np.array(data.bones[n].matrix_local) for n in SMPLX_JOINT_NAMES])
    # world skinning transforms A_i of the pose (Blender world = rest frame here)
    n = len(rotmats)
    glob = np.empty((n, 55, 4, 4))
    for i in range(55):
        local = homogeneous(rotmats[:, i], joints[i] - (joints[SMPLX_PARENTS[i]]
                                                         if SMPLX_PARENTS[i] >= 0 else 0))
        if SMPLX_PARENTS[i] < 0:
            local[:, :3, 3] = root
        glob[:, i] = local if SMPLX_PARENTS[i] < 0 else glob[:, SMPLX_PARENTS[i]] @ local
    skin = glob @ homogeneous(np.broadcast_to(np.eye(3), (55, 3, 3)), -joints)[None]
    basis = bone_basis(rest, skin, SMPLX_PARENTS)
    quats = make_quaternions_continuous(matrix_to_quaternion(basis[..., :3, :3]), axis=0)
    frames = np.arange(1, n + 1, dtype=float)
    w = ActionWriter(rig, f"{name}_motion")
    for i, bn in enumerate(SMPLX_JOINT_NAMES):
        pb = rig.pose.bones[bn]
        pb.rotation_mode = 'QUATERNION'
        w.add_array(f'pose.bones["{bn}"].rotation_quaternion', frames, quats[:, i], group=bn)
        if i == 0:
            w.add_array(f'pose.bones["{bn}"].location', frames, basis[:, 0, :3, 3], group=bn)
    rig["hybrik_source"] = "synthetic SMPL-X"
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, n
    return rig


def smplx_motion(n=30, seed=0, spread=0.5, finger_spread=0.6):
    """Smooth random SMPL-X local rotations: body like the lively clip, jaw
    and eyes a little, fingers curling (mostly about one axis) and spreading."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None, None]
    spread_j = np.full(55, spread)
    spread_j[[3, 6, 9, 12, 13, 14]] = 0.15
    spread_j[15] = 0.3
    spread_j[22:25] = 0.1
    spread_j[25:] = 0.15
    a, b = rng.normal(0, 1, (2, 1, 55, 3)) * spread_j[None, :, None]
    a[..., 25:, 2] += rng.uniform(0, finger_spread, (1, 30))  # curl
    aa = a + (b - a) * t
    rot = axis_angle_to_matrix(aa)
    root = np.tile([0.0, 0.0, 1.0], (n, 1)) + 0.05 * np.sin(np.linspace(0, 3, n))[:, None]
    return rot, root


def rigify_generated(prefix="ORG-"):
    """The rig Rigify generates from Blender's human metarig (controls,
    MCH helpers, ORG and DEF bones, constraints and drivers), and its
    anatomy read on its ORG (or DEF) bones. None where bpy cannot generate."""
    metarig()
    try:
        bpy.ops.pose.rigify_generate()
    except (RuntimeError, AttributeError):
        return None, None
    rig = next((o for o in bpy.context.scene.objects if o.type == 'ARMATURE'
                and "DEF-spine" in o.data.bones), None)
    if rig is None:
        return None, None
    return rig, rigify_generated_anatomy(prefix)


def rigify_generated_anatomy(p="ORG-"):
    return Anatomy(hips=(p + "thigh.L", p + "thigh.R"),
                   shoulders=(p + "upper_arm.L", p + "upper_arm.R"),
                   head=p + "spine.006", face_rest=(0.0, -1.0, 0.0),
                   feet={"left_ankle": p + "foot.L", "right_ankle": p + "foot.R",
                         "left_foot": p + "toe.L", "right_foot": p + "toe.R"},
                   knees=(p + "shin.L", p + "shin.R"), standing_height=None)
