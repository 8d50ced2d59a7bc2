"""Bone maps: presets, auto-detection, validation and JSON files (no bpy).

A bone map sends source bone names to bone names of a target armature. The
source is a hybrik-blender character: SMPL (``skeleton.JOINT_NAMES``, 24
bones) or SMPL-X (``skeleton.SMPLX_JOINT_NAMES``, 55 bones: the same body,
jaw, eyes and 15 finger joints per hand). A map may name any of
``BONE_NAMES``, the union of both; bones the source lacks are skipped.

Presets list, for each source bone, candidate target names in order of
preference; the first one present on the target wins. Names compare
case-insensitively after dropping any namespace up to the last ``:`` (so
``mixamorig:Hips``, ``mixamorig1:Hips`` and ``Hips`` all match). Source bones
may stay unmapped, and target bones between two mapped bones may be skipped
(three SMPL spine bones onto two or five target bones).

Validation (:func:`validate_hierarchy`): the mapped pelvis must be an
ancestor of both mapped thighs, and along every anatomical chain (spine,
arms, legs, fingers) each mapped bone must lie below the bone its nearest
mapped anatomical parent went to; bones that a bone's constraints copy
count as its parents (Rigify's controls hang from such helpers). Presets
are resolved with the same rule: a candidate that would break it is passed
over, and when no candidate for the pelvis carries both thighs, the bone
that does (their lowest common ancestor) is taken. The bone that carries
the arms (collars) is SMPL's chest, spine3, and the spine bones below it
become spine1 (and spine2): a rig with two spine bones maps pelvis, lower
spine and chest, not pelvis, spine1 and spine2.
"""
import json

from ..body.skeleton import FINGERS, HAND_JOINT_NAMES, JOINT_NAMES, PARENTS

MAP_FORMAT = "hybrik-blender.bone-map"
MAP_VERSION = 1

FACE_NAMES = ("jaw", "left_eye", "right_eye")
BONE_NAMES = JOINT_NAMES + FACE_NAMES + HAND_JOINT_NAMES
BODY_NAMES = JOINT_NAMES

# Bones that must all be mapped for a usable retarget.
CORE_BONES = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee",
              "left_shoulder", "right_shoulder", "left_elbow", "right_elbow")


def _anatomical_parents():
    out = {n: (JOINT_NAMES[p] if p >= 0 else None) for n, p in zip(JOINT_NAMES, PARENTS)}
    for n in FACE_NAMES:
        out[n] = "head"
    for side in ("left", "right"):
        for finger in FINGERS:
            out[f"{side}_{finger}1"] = f"{side}_wrist"
            out[f"{side}_{finger}2"] = f"{side}_{finger}1"
            out[f"{side}_{finger}3"] = f"{side}_{finger}2"
    return out


# Parent of each source bone along the body's chains (SMPL and SMPL-X agree
# on the body; fingers hang from the wrists, jaw and eyes from the head).
ANATOMICAL_PARENT = _anatomical_parents()


class BoneMapError(ValueError):
    """A bone map that cannot be used (bad JSON, unknown names, duplicates,
    a hierarchy that does not fit the body)."""


def _sided(center, sided, left, right):
    """Expand '{s}' in the sided entries into the two sides' names."""
    out = {k: list(v) for k, v in center.items()}
    for prefix, tag in (("left_", left), ("right_", right)):
        for key, names in sided.items():
            out[prefix + key] = [n.format(s=tag) for n in names]
    return out


def _fingers(pattern, names=None):
    """{'index1': [pattern.format(f=..., k=1, s='{s}')], ...} for the 15
    finger joints; `names` renames SMPL-X's finger names (index, middle,
    pinky, ring, thumb) for the rig."""
    names = names or {f: f for f in FINGERS}
    out = {}
    for finger in FINGERS:
        for k in (1, 2, 3):
            pats = [pattern] if isinstance(pattern, str) else list(pattern)
            out[f"{finger}{k}"] = [p.replace("{f}", names[finger]).replace("{k}", str(k))
                                   for p in pats]
    return out


_LIMBS = ("collar", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "foot")


def _limbs(*names):
    return dict(zip(_LIMBS, ([n] if isinstance(n, str) else list(n) for n in names)))


_MIXAMO_FINGERS = _fingers("{s}Hand{f}{k}", {"index": "Index", "middle": "Middle",
                                              "pinky": "Pinky", "ring": "Ring",
                                              "thumb": "Thumb"})
_RIGIFY_FINGER_NAMES = {"index": "f_index", "middle": "f_middle", "pinky": "f_pinky",
                        "ring": "f_ring", "thumb": "thumb"}
_UE_LIMBS = _limbs("clavicle_{s}", "upperarm_{s}", "lowerarm_{s}", "hand_{s}", "thigh_{s}",
                   "calf_{s}", "foot_{s}", "ball_{s}")
_UE_LIMBS.update(_fingers("{f}_0{k}_{s}"))
_VRM_FINGER_NAMES = {"index": "Index", "middle": "Middle", "pinky": "Little", "ring": "Ring",
                     "thumb": "Thumb"}

PRESETS = {
    "SMPL": {
        "label": "SMPL / SMPL-X / hybrik-blender",
        "bones": {name: [name] for name in BONE_NAMES},
    },
    "MIXAMO": {
        "label": "Mixamo",
        "bones": _sided(
            {"pelvis": ["Hips"], "spine1": ["Spine"], "spine2": ["Spine1"],
             "spine3": ["Spine2"], "neck": ["Neck"], "head": ["Head"]},
            dict(_limbs("{s}Shoulder", "{s}Arm", "{s}ForeArm", "{s}Hand", "{s}UpLeg",
                        "{s}Leg", "{s}Foot", ["{s}ToeBase", "{s}Toe"]),
                 eye=["{s}Eye"], **_MIXAMO_FINGERS),
            "Left", "Right"),
    },
    "LAFAN1": {
        "label": "LaFAN1 (Ubisoft) BVH",
        "bones": _sided(
            {"pelvis": ["Hips"], "spine1": ["Spine"], "spine2": ["Spine1"],
             "spine3": ["Spine2"], "neck": ["Neck"], "head": ["Head"]},
            _limbs("{s}Shoulder", "{s}Arm", "{s}ForeArm", "{s}Hand", "{s}UpLeg", "{s}Leg",
                   "{s}Foot", "{s}Toe"),
            "Left", "Right"),
    },
    "BVH_MOCAP": {
        "label": "Hips/Chest/LeftCollar BVH (CMU, MotionBuilder)",
        # "LeftShoulder" is the upper arm here, "LeftHip" the thigh.
        "bones": _sided(
            {"pelvis": ["Hips"], "spine1": ["Chest", "Spine", "LowerBack"],
             "spine2": ["Chest2", "Spine1"], "spine3": ["Chest3", "Chest4", "Spine2"],
             "neck": ["Neck"], "head": ["Head"]},
            _limbs("{s}Collar", "{s}Shoulder", "{s}Elbow", "{s}Wrist", "{s}Hip", "{s}Knee",
                   "{s}Ankle", ["{s}Toe", "{s}ToeBase", "{s}Toes"]),
            "Left", "Right"),
    },
    "RIGIFY_DEF": {
        "label": "Rigify deform bones",
        "bones": _sided(
            {"pelvis": ["DEF-spine"], "spine1": ["DEF-spine.001"],
             "spine2": ["DEF-spine.002"], "spine3": ["DEF-spine.003"],
             "neck": ["DEF-spine.004"], "head": ["DEF-spine.006"], "jaw": ["DEF-jaw"]},
            dict(_limbs("DEF-shoulder.{s}", "DEF-upper_arm.{s}", "DEF-forearm.{s}",
                        "DEF-hand.{s}", "DEF-thigh.{s}", "DEF-shin.{s}", "DEF-foot.{s}",
                        "DEF-toe.{s}"),
                 eye=["DEF-eye.{s}"], **_fingers("DEF-{f}.0{k}.{s}", _RIGIFY_FINGER_NAMES)),
            "L", "R"),
    },
    "RIGIFY_FK": {
        "label": "Rigify FK controls",
        "bones": _sided(
            {"pelvis": ["torso"], "spine2": ["spine_fk.002"], "spine3": ["spine_fk.003"],
             "neck": ["neck"], "head": ["head"]},
            dict(_limbs("shoulder.{s}", "upper_arm_fk.{s}", "forearm_fk.{s}", "hand_fk.{s}",
                        "thigh_fk.{s}", "shin_fk.{s}", "foot_fk.{s}", ["toe_fk.{s}", "toe.{s}"]),
                 **_fingers("{f}.0{k}.{s}", _RIGIFY_FINGER_NAMES)),
            "L", "R"),
    },
    "UE5": {
        "label": "Unreal Engine 5 Manny / Quinn",
        # five spine bones: SMPL's three go onto every other one
        "bones": _sided(
            {"pelvis": ["pelvis"], "spine1": ["spine_01"], "spine2": ["spine_03"],
             "spine3": ["spine_05"], "neck": ["neck_01"], "head": ["head"]}, _UE_LIMBS,
            "l", "r"),
    },
    "UE4": {
        "label": "Unreal Engine 4 Mannequin",
        "bones": _sided(
            {"pelvis": ["pelvis"], "spine1": ["spine_01"], "spine2": ["spine_02"],
             "spine3": ["spine_03"], "neck": ["neck_01"], "head": ["head"]}, _UE_LIMBS,
            "l", "r"),
    },
    "VRM": {
        "label": "VRM humanoid",
        # By name only; blender/retarget.py prefers the VRM add-on's humanoid data.
        "bones": _sided(
            {"pelvis": ["J_Bip_C_Hips", "hips"], "spine1": ["J_Bip_C_Spine", "spine"],
             "spine2": ["J_Bip_C_Chest", "chest"],
             "spine3": ["J_Bip_C_UpperChest", "upperChest"],
             "neck": ["J_Bip_C_Neck", "neck"], "head": ["J_Bip_C_Head", "head"],
             "jaw": ["J_Bip_C_Jaw", "jaw"]},
            dict({"collar": ["J_Bip_{s[0]}_Shoulder", "{s[1]}Shoulder"],
                  "shoulder": ["J_Bip_{s[0]}_UpperArm", "{s[1]}UpperArm"],
                  "elbow": ["J_Bip_{s[0]}_LowerArm", "{s[1]}LowerArm"],
                  "wrist": ["J_Bip_{s[0]}_Hand", "{s[1]}Hand"],
                  "hip": ["J_Bip_{s[0]}_UpperLeg", "{s[1]}UpperLeg"],
                  "knee": ["J_Bip_{s[0]}_LowerLeg", "{s[1]}LowerLeg"],
                  "ankle": ["J_Bip_{s[0]}_Foot", "{s[1]}Foot"],
                  "foot": ["J_Bip_{s[0]}_ToeBase", "{s[1]}Toes"],
                  "eye": ["J_Adj_{s[0]}_FaceEye", "{s[1]}Eye"]},
                 **_fingers("J_Bip_{s[0]}_{f}{k}", _VRM_FINGER_NAMES)),
            ("L", "left"), ("R", "right")),
    },
    "METARIG": {
        "label": "Blender human metarig / Rigify names",
        # "pelvis" for rigs (BVH files) that name their hips bone so; the
        # ancestor rule picks whichever of the two carries the thighs.
        "bones": _sided(
            {"pelvis": ["spine", "pelvis", "hips"], "spine1": ["spine.001"],
             "spine2": ["spine.002"], "spine3": ["spine.003"],
             "neck": ["spine.004", "neck"], "head": ["spine.006", "head", "face"],
             "jaw": ["jaw"]},
            dict(_limbs("shoulder.{s}", "upper_arm.{s}", "forearm.{s}", "hand.{s}",
                        "thigh.{s}", "shin.{s}", "foot.{s}", "toe.{s}"),
                 eye=["eye.{s}"], **_fingers("{f}.0{k}.{s}", _RIGIFY_FINGER_NAMES)),
            "L", "R"),
    },
}

# VRM 1.0 humanoid bone ids as the VRM add-on names its properties.
_VRM_FINGER_IDS = {"index": ("index", ("proximal", "intermediate", "distal")),
                   "middle": ("middle", ("proximal", "intermediate", "distal")),
                   "pinky": ("little", ("proximal", "intermediate", "distal")),
                   "ring": ("ring", ("proximal", "intermediate", "distal")),
                   "thumb": ("thumb", ("metacarpal", "proximal", "distal"))}
VRM_HUMAN_BONES = _sided(
    {"pelvis": ["hips"], "spine1": ["spine"], "spine2": ["chest"], "spine3": ["upper_chest"],
     "neck": ["neck"], "head": ["head"], "jaw": ["jaw"]},
    dict({"collar": ["{s}_shoulder"], "shoulder": ["{s}_upper_arm"],
          "elbow": ["{s}_lower_arm"], "wrist": ["{s}_hand"], "hip": ["{s}_upper_leg"],
          "knee": ["{s}_lower_leg"], "ankle": ["{s}_foot"], "foot": ["{s}_toes"],
          "eye": ["{s}_eye"]},
         **{f"{finger}{k + 1}": [f"{{s}}_{vid}_{part}"]
            for finger, (vid, parts) in _VRM_FINGER_IDS.items()
            for k, part in enumerate(parts)}),
    "left", "right")

# VRM 0.x names the thumb's three bones proximal/intermediate/distal.
VRM0_THUMB_IDS = {f"{s}_thumb_{a}": f"{s}_thumb_{b}" for s in ("left", "right")
                  for a, b in (("proximal", "metacarpal"), ("intermediate", "proximal"))}


def normalize_name(name):
    return str(name).rsplit(":", 1)[-1].strip().lower()


# ---------------------------------------------------------------------------
# hierarchy helpers

class _Parents(dict):
    """{bone: parent or None}, plus the bones each bone's constraints follow
    (``extra``), which count as ancestors too: in a rig like Rigify's the
    controls hang from helper bones that copy other controls."""

    def __init__(self, items, extra=None):
        super().__init__(items)
        self.extra = {k: [v for v in vs if v in self] for k, vs in (extra or {}).items()}


def _parents_by_name(bone_names, parents, extra=None):
    if parents is None:
        return None
    names = list(bone_names)
    return _Parents({n: (names[p] if p is not None and p >= 0 else None)
                     for n, p in zip(names, parents)}, extra)


def _is_ancestor(parent_of, anc, bone):
    extra = getattr(parent_of, "extra", {})
    if not extra:
        b = parent_of.get(bone)
        seen = 0
        while b is not None:
            if b == anc:
                return True
            b = parent_of.get(b)
            seen += 1
            if seen > len(parent_of):
                raise BoneMapError("the target's bone hierarchy has a cycle")
        return False
    seen, stack = {bone}, [bone]
    while stack:
        b = stack.pop()
        for up in [parent_of.get(b)] + extra.get(b, []):
            if up is None or up in seen:
                continue
            if up == anc:
                return True
            seen.add(up)
            stack.append(up)
    return False


def _chain_to_root(parent_of, bone):
    out = []
    while bone is not None:
        out.append(bone)
        bone = parent_of.get(bone)
        if len(out) > len(parent_of) + 1:
            raise BoneMapError("the target's bone hierarchy has a cycle")
    return out


def lowest_common_ancestor(parent_of, a, b):
    up = set(_chain_to_root(parent_of, a))
    for bone in _chain_to_root(parent_of, b):
        if bone in up:
            return bone
    return None


def mapped_anatomical_parent(smpl, mapping):
    """Nearest anatomical ancestor of `smpl` that the map sends somewhere."""
    p = ANATOMICAL_PARENT.get(smpl)
    while p is not None and p not in mapping:
        p = ANATOMICAL_PARENT.get(p)
    return p


def hierarchy_problems(mapping, bone_names, parents, follows=None):
    """Readable problems of a map against the target's hierarchy (empty when
    it fits): the pelvis must carry both thighs, and every mapped bone must
    lie below the bone of its nearest mapped anatomical parent. follows:
    {bone: [bones its constraints copy]}, counted as parents too."""
    parent_of = _parents_by_name(bone_names, parents, follows)
    problems = []
    pelvis = mapping.get("pelvis")
    if pelvis in parent_of:
        for side in ("left", "right"):
            thigh = mapping.get(f"{side}_hip")
            if thigh in parent_of and not _is_ancestor(parent_of, pelvis, thigh):
                problems.append(f"the pelvis bone {pelvis!r} does not carry the {side} leg: "
                                f"{thigh!r} ({side}_hip) is not below it")
    for smpl in BONE_NAMES:
        bone = mapping.get(smpl)
        if bone not in parent_of or smpl == "pelvis":
            continue
        anc = mapped_anatomical_parent(smpl, mapping)
        if anc is None or (anc == "pelvis" and smpl.endswith("_hip")):
            continue
        anc_bone = mapping[anc]
        if anc_bone in parent_of and not _is_ancestor(parent_of, anc_bone, bone):
            problems.append(f"{smpl} -> {bone!r} is not below {anc} -> {anc_bone!r} in the "
                            "target's hierarchy")
    return problems


def validate_hierarchy(mapping, bone_names, parents, follows=None):
    """Raise BoneMapError naming the bones when the map does not fit the
    target's hierarchy (see hierarchy_problems)."""
    problems = hierarchy_problems(mapping, bone_names, parents, follows)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BoneMapError(problems[0] + more)


# ---------------------------------------------------------------------------
# presets

def _lookup(bone_names):
    lookup = {}
    for name in bone_names:
        lookup.setdefault(name, name)
    for name in bone_names:
        lookup.setdefault(normalize_name(name), name)
    return lookup


def _resolve(preset, bone_names, parents=None, follows=None, keyable=None):
    """(map, number of source bones matched by their first candidate)."""
    if preset not in PRESETS:
        raise BoneMapError(f"unknown bone map preset {preset!r}")
    lookup = _lookup(bone_names if keyable is None else keyable)
    parent_of = _parents_by_name(bone_names, parents, follows)
    table = PRESETS[preset]["bones"]
    out, primary = {}, 0

    def candidates(smpl):
        for k, cand in enumerate(table.get(smpl, ())):
            hit = lookup.get(cand) or lookup.get(normalize_name(cand))
            if hit is not None and hit not in out.values():
                yield k, hit

    # legs first, so the pelvis can be checked against the thighs
    order = [n for n in BONE_NAMES if n.endswith("_hip")] + \
        [n for n in BONE_NAMES if not n.endswith("_hip")]
    for smpl in order:
        for k, hit in candidates(smpl):
            if parent_of is not None and not _fits(smpl, hit, out, parent_of):
                continue
            out[smpl] = hit
            primary += k == 0
            break
    if parent_of is not None:
        named = {lookup.get(c) or lookup.get(normalize_name(c))
                 for cands in table.values() for c in cands} - {None}
        _chest_is_spine3(out, parent_of, named)
    if parent_of is not None and "pelvis" not in out:
        thighs = [out.get(f"{s}_hip") for s in ("left", "right")]
        if all(t in parent_of for t in thighs):
            lca = lowest_common_ancestor(parent_of, *thighs)
            if lca is not None and lca not in out.values():
                out["pelvis"] = lca
    return out, primary


SPINE_NAMES = ("spine1", "spine2", "spine3")


def _chest_is_spine3(out, parent_of, allowed):
    """Make the bone that carries the arms spine3 (in place): SMPL's spine3
    is the chest, so a rig with fewer spine bones maps its chest there and
    its lower spine bones to spine1 (and spine2). Only bones in `allowed`
    are mapped."""
    arm = next((out[n] for n in ("left_collar", "right_collar", "left_shoulder",
                                 "right_shoulder") if n in out), None)
    pelvis = out.get("pelvis")
    if arm is None or pelvis is None or not _is_ancestor(parent_of, pelvis, arm):
        return
    chest = parent_of.get(arm)
    path = []  # chest down to the pelvis' child
    b = chest
    while b is not None and b != pelvis:
        path.append(b)
        b = parent_of.get(b)
    if not path or out.get("spine3") == chest or chest not in allowed:
        return
    taken = {n: out[n] for n in SPINE_NAMES if n in out}
    if any(v not in path for v in taken.values()):
        return  # the spine map does not follow the chest's path: leave it
    below = [b for b in reversed(path[1:]) if b in taken.values()]
    if not below and len(path) > 1 and path[-1] in allowed:
        below = [path[-1]]
    for n in SPINE_NAMES:
        out.pop(n, None)
    out["spine3"] = chest
    for n, b in zip(("spine1", "spine2"), below[:2]):
        out[n] = b


def _fits(smpl, bone, out, parent_of):
    if smpl == "pelvis":
        return all(_is_ancestor(parent_of, bone, out[t]) for t in ("left_hip", "right_hip")
                   if t in out)
    anc = mapped_anatomical_parent(smpl, out)
    if anc is None or (anc == "pelvis" and smpl.endswith("_hip")):
        return True
    return _is_ancestor(parent_of, out[anc], bone)


def resolve_preset(preset, bone_names, parents=None, follows=None, keyable=None):
    """{source bone: target bone} for the preset's names present in
    bone_names. With `parents` (index of each bone's parent, -1 for roots)
    the hierarchy rules of the module docstring choose among candidates;
    follows: {bone: [bones its constraints copy]}; keyable: the only bones
    that may be mapped (default all)."""
    return _resolve(preset, bone_names, parents, follows, keyable)[0]


def vrm_map(human_bones):
    """Bone map from VRM humanoid data: {vrm bone id: armature bone name}."""
    out = {}
    for smpl, (vrm_id,) in VRM_HUMAN_BONES.items():
        name = human_bones.get(vrm_id)
        if name:
            out[smpl] = name
    return out


def map_score(mapping):
    """How usable a map is: core bones first, then all mapped bones."""
    return (sum(b in mapping for b in CORE_BONES), len(mapping))


def detect_preset(bone_names, vrm_human_bones=None, parents=None, follows=None,
                  keyable=None):
    """(preset name, bone map) of the preset that matches best, or
    (None, {}) when none maps all core bones. VRM humanoid data, when given
    and complete, wins. Ties go to the preset whose first-choice names
    matched more often, then to the earlier preset."""
    if vrm_human_bones:
        mapping = vrm_map(vrm_human_bones)
        if all(b in mapping for b in CORE_BONES):
            return "VRM", mapping
    best, best_map, best_score = None, {}, (-1, -1, -1)
    for preset in PRESETS:
        mapping, primary = _resolve(preset, bone_names, parents, follows, keyable)
        score = map_score(mapping) + (primary,)
        if score > best_score:
            best, best_map, best_score = preset, mapping, score
    if best_score[0] < len(CORE_BONES):
        return None, {}
    return best, best_map


def best_partial_preset(bone_names, parents=None, follows=None, keyable=None):
    """(preset, map) of the best preset even when it misses core bones."""
    best, best_map, best_score = None, {}, (0, 0, 0)
    for preset in PRESETS:
        mapping, primary = _resolve(preset, bone_names, parents, follows, keyable)
        score = map_score(mapping) + (primary,)
        if score > best_score:
            best, best_map, best_score = preset, mapping, score
    return best, best_map


# ---------------------------------------------------------------------------
# checks and JSON

def check_map(mapping, bone_names=None, parents=None, follows=None):
    """Validate a bone map; returns a clean {str: str} copy. With the
    target's bone names (and parents) it must also fit the target."""
    if not isinstance(mapping, dict):
        raise BoneMapError("a bone map is a JSON object of SMPL bone -> target bone")
    out = {}
    for key, value in mapping.items():
        if key not in BONE_NAMES:
            raise BoneMapError(f"{key!r} is not an SMPL or SMPL-X bone (expected one of "
                               f"{', '.join(JOINT_NAMES)}, jaw, eyes or fingers such as "
                               "left_index1)")
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise BoneMapError(f"the target of {key!r} must be a bone name")
        out[key] = value
    seen = {}
    for key in BONE_NAMES:
        value = out.get(key)
        if value is None:
            continue
        if value in seen:
            raise BoneMapError(f"{value!r} is mapped twice ({seen[value]!r} and {key!r})")
        seen[value] = key
    if bone_names is not None:
        known = set(bone_names)
        missing = sorted(v for v in out.values() if v not in known)
        if missing:
            raise BoneMapError(f"the target has no bone named {', '.join(map(repr, missing))}")
        if parents is not None:
            validate_hierarchy(out, bone_names, parents, follows)
    return out


def missing_core(mapping):
    return [b for b in CORE_BONES if b not in mapping]


def map_to_json(mapping, name="custom"):
    clean = check_map(mapping)
    doc = {"format": MAP_FORMAT, "version": MAP_VERSION, "name": str(name),
           "bones": {k: clean[k] for k in BONE_NAMES if k in clean}}
    return json.dumps(doc, indent=2)


def map_from_json(text):
    """(name, bone map) from the JSON text written by map_to_json. A plain
    {source bone: target bone} object is accepted too; partial maps are
    fine (they are checked when used)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BoneMapError(f"the bone map is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "bones" in doc:
        if doc.get("format", MAP_FORMAT) != MAP_FORMAT:
            raise BoneMapError(f"not a bone map file (format {doc.get('format')!r})")
        try:
            version = int(doc.get("version", MAP_VERSION))
        except (TypeError, ValueError):
            raise BoneMapError(f"bad bone map version {doc.get('version')!r}") from None
        if version > MAP_VERSION:
            raise BoneMapError(f"bone map version {doc['version']} is newer than this "
                               f"add-on reads ({MAP_VERSION})")
        return str(doc.get("name", "custom")), check_map(doc["bones"])
    return "custom", check_map(doc)


def save_map(path, mapping, name="custom"):
    """Write the map as JSON (temporary file beside it, then renamed)."""
    from ..safe_paths import write_text_atomic
    write_text_atomic(path, map_to_json(mapping, name) + "\n", "bone map")


MAX_MAP_BYTES = 1 << 20


def load_map(path):
    with open(path, "rb") as fh:
        data = fh.read(MAX_MAP_BYTES + 1)
    if len(data) > MAX_MAP_BYTES:
        raise BoneMapError(f"{path} is too large for a bone map (over 1 MiB)")
    return map_from_json(data.decode("utf-8", errors="strict"))
