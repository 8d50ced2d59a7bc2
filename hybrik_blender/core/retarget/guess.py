"""Guess a bone map for a rig no preset knows (no bpy).

:func:`guess_map` first takes what the best preset recognises by name, then
reads the hierarchy and the rest geometry for the rest:

* A *mirror pair* is two child branches of one bone whose main chains (at
  each step the child with the longest chain below it) have about the same
  length (within 20%) and bone count (within one).
* The pelvis is the bone nearest the root with a mirror pair of chains of
  at least three bones (the legs) and, in another branch, a bone with a
  second such pair (the chest, carrying the arms); of the pairs the longest
  are taken. The spine is the path between them (spine1 its first bone,
  spine2 its middle, spine3 the chest), the neck and head the chest's
  remaining branch.
* Along a leg the two longest consecutive bones are thigh and shin,
  followed by foot and toes; along an arm the same gives upper arm and
  forearm, with the collar before them and the hand after. Under each
  hand, chains of three or more bones are fingers: the one starting nearest
  the wrist is the thumb, the others index to little finger from the front.
* Left and right come from the names when they say it (Left/L/.l/_l...),
  else from the geometry: the feet point to the front, or, when they do not
  tell (all bones along one axis), the rig faces -Y as Blender's front view
  does.

The result may be partial; the panel shows it for the user to finish.
"""
import re

import numpy as np

from .maps import best_partial_preset, check_map

_LEFT = re.compile(r"(^|[^a-z])(left|l)([^a-z]|$)|^l(?=[A-Z])")
_RIGHT = re.compile(r"(^|[^a-z])(right|r)([^a-z]|$)|^r(?=[A-Z])")


def side_of(name):
    """'left', 'right' or None from a bone name's side marker."""
    base = str(name).rsplit(":", 1)[-1]
    low = base.lower()
    for word, side in (("left", "left"), ("right", "right")):
        if word in low:
            return side
    if _LEFT.search(low) or re.match(r"^L[A-Z_.]", base):
        return "left"
    if _RIGHT.search(low) or re.match(r"^R[A-Z_.]", base):
        return "right"
    return None


class _Tree:
    def __init__(self, names, parents, heads, tails):
        self.names = list(names)
        self.parents = np.asarray(parents, dtype=np.int64)
        self.heads = np.asarray(heads, dtype=np.float64)
        self.tails = np.asarray(tails, dtype=np.float64)
        self.children = [[] for _ in self.names]
        for i, p in enumerate(self.parents):
            if p >= 0:
                self.children[p].append(i)
        self.length = np.linalg.norm(self.tails - self.heads, axis=1)
        self._reach = {}

    def seg(self, i):
        """Length of bone i as a joint-to-joint segment (to its main child)."""
        kids = self.children[i]
        if kids:
            c = max(kids, key=self.reach)
            return float(np.linalg.norm(self.heads[c] - self.heads[i]))
        return float(self.length[i])

    def reach(self, i):
        """Longest joint-to-joint path length from bone i's head downwards."""
        if i not in self._reach:
            kids = self.children[i]
            if not kids:
                self._reach[i] = float(self.length[i])
            else:
                self._reach[i] = max(float(np.linalg.norm(self.heads[c] - self.heads[i]))
                                     + self.reach(c) for c in kids)
        return self._reach[i]

    def chain(self, i):
        out = [i]
        while self.children[out[-1]]:
            out.append(max(self.children[out[-1]], key=self.reach))
        return out

    def depth(self, i):
        d = 0
        while self.parents[i] >= 0:
            i, d = self.parents[i], d + 1
        return d

    def descendants(self, i):
        out, stack = [], [i]
        while stack:
            j = stack.pop()
            out.append(j)
            stack.extend(self.children[j])
        return out


def _mirror_pairs(tree, b, min_bones):
    """(length, a, c) for mirror pairs of child branches of bone b."""
    kids = tree.children[b]
    out = []
    for ia in range(len(kids)):
        for ic in range(ia + 1, len(kids)):
            a, c = kids[ia], kids[ic]
            la, lc = tree.reach(a), tree.reach(c)
            na, nc = len(tree.chain(a)), len(tree.chain(c))
            if min(la, lc) <= 0 or min(na, nc) < min_bones:
                continue
            if min(la, lc) / max(la, lc) < 0.8 or abs(na - nc) > 1:
                continue
            out.append((0.5 * (la + lc), a, c))
    return sorted(out, reverse=True)


def _two_longest(tree, chain):
    """Index k of the first of the two longest consecutive bones."""
    segs = [tree.seg(i) for i in chain]
    if len(chain) < 2:
        return None
    best = max(range(len(chain) - 1), key=lambda k: segs[k] + segs[k + 1])
    return best


def _structure(tree):
    """(pelvis, legs pair, chest, arms pair) or None."""
    best = None
    for b in sorted(range(len(tree.names)), key=tree.depth):
        legs = _mirror_pairs(tree, b, 3)
        if not legs:
            continue
        for leg_len, la, lc in legs:
            others = [k for k in tree.children[b] if k not in (la, lc)]
            chests = []
            for o in others:
                for d in tree.descendants(o):
                    arms = _mirror_pairs(tree, d, 3)
                    if arms:
                        chests.append((arms[0][0], -tree.depth(d), d, arms[0]))
            if chests:
                _, _, chest, arms = max(chests)
                cand = (b, (la, lc), chest, (arms[1], arms[2]))
                if best is None:
                    best = cand
                break
        if best is not None:
            return best
    return None


def _orient(tree, pair, pelvis_head, chest_head, feet_dirs):
    """(left, right) of a mirror pair."""
    a, c = pair
    sa, sc = side_of(tree.names[a]), side_of(tree.names[c])
    if sa == "left" or sc == "right":
        return a, c
    if sa == "right" or sc == "left":
        return c, a
    ha, hc = tree.heads[tree.chain(a)], tree.heads[tree.chain(c)]
    # first joints of the two chains that are apart
    sep = np.linalg.norm(ha[:min(len(ha), len(hc))] - hc[:min(len(ha), len(hc))], axis=1)
    k = int(np.argmax(sep > 1e-4)) if np.any(sep > 1e-4) else 0
    lateral = ha[k] - hc[k]
    up = chest_head - pelvis_head
    front = np.cross(lateral, up)  # front if a is the left side
    if np.linalg.norm(front) < 1e-9:
        return a, c
    front /= np.linalg.norm(front)
    for d in feet_dirs:
        n = np.linalg.norm(d)
        if n > 1e-9 and abs(np.dot(d / n, front)) > 0.3:
            return (a, c) if np.dot(d, front) > 0 else (c, a)
    return (a, c) if front[1] < 0 else (c, a)


def structural_map(names, parents, heads, tails):
    """The map the hierarchy and geometry suggest (may be empty)."""
    tree = _Tree(names, parents, heads, tails)
    found = _structure(tree)
    if found is None:
        return {}
    pelvis, legs, chest, arms = found
    out = {"pelvis": pelvis}
    leg_chains = {}
    feet_dirs = []
    for c in legs:
        ch = tree.chain(c)
        k = _two_longest(tree, ch)
        leg_chains[c] = (ch, k)
        if k is not None and k + 3 < len(ch):
            feet_dirs.append(tree.heads[ch[k + 3]] - tree.heads[ch[k + 2]])
    left, right = _orient(tree, legs, tree.heads[pelvis], tree.heads[chest], feet_dirs)
    for side, c in (("left", left), ("right", right)):
        ch, k = leg_chains[c]
        if k is None:
            continue
        for off, j in enumerate(("hip", "knee", "ankle", "foot")):
            if k + off < len(ch):
                out[f"{side}_{j}"] = ch[k + off]
    arm_left, arm_right = _orient(tree, arms, tree.heads[pelvis], tree.heads[chest], feet_dirs)
    if side_of(tree.names[arm_left]) is None and side_of(tree.names[left]) is not None:
        # names told the legs' sides only: put the arms on the same sides
        lat = tree.heads[tree.chain(arm_left)[-1]] - tree.heads[tree.chain(arm_right)[-1]]
        leg_lat = tree.heads[out["left_hip"]] - tree.heads[out["right_hip"]]
        if np.dot(lat, leg_lat) < 0:
            arm_left, arm_right = arm_right, arm_left
    hands = {}
    for side, c in (("left", arm_left), ("right", arm_right)):
        ch = tree.chain(c)
        k = _two_longest(tree, ch)
        if k is None:
            continue
        if k >= 1:
            out[f"{side}_collar"] = ch[k - 1]
        out[f"{side}_shoulder"] = ch[k]
        out[f"{side}_elbow"] = ch[k + 1]
        if k + 2 < len(ch):
            out[f"{side}_wrist"] = ch[k + 2]
            hands[side] = ch[k + 2]
    path = []
    b = chest
    while b != pelvis and b >= 0:
        path.append(b)
        b = tree.parents[b]
    path = path[::-1]
    if path:
        out["spine3"] = path[-1]
        if len(path) >= 2:
            out["spine1"] = path[0]
        if len(path) >= 3:
            out["spine2"] = path[len(path) // 2]
    arm_roots = set(arms)
    rest = [k for k in tree.children[chest] if k not in arm_roots]
    if rest:
        head_chain = tree.chain(max(rest, key=tree.reach))
        if len(head_chain) >= 2:
            out["neck"], out["head"] = head_chain[0], head_chain[1]
        else:
            out["head"] = head_chain[0]
    up = tree.heads[chest] - tree.heads[pelvis]
    lat = tree.heads[out["left_hip"]] - tree.heads[out["right_hip"]] \
        if "left_hip" in out and "right_hip" in out else np.array([1.0, 0.0, 0.0])
    front = np.cross(lat, up)
    for side, hand in hands.items():
        _fingers(tree, side, hand, front, out)
    return {k: tree.names[v] for k, v in out.items()}


def _fingers(tree, side, hand, front, out):
    chains = []
    for c in tree.children[hand]:
        ch = tree.chain(c)
        if len(ch) >= 3:
            chains.append(ch[-3:])
    if len(chains) != 5:
        return
    wrist = tree.heads[hand]
    thumb = min(chains, key=lambda ch: np.linalg.norm(tree.heads[ch[0]] - wrist))
    others = sorted((ch for ch in chains if ch is not thumb),
                    key=lambda ch: -float(np.dot(tree.heads[ch[0]], front)))
    for finger, ch in zip(("index", "middle", "ring", "pinky"), others):
        for k, j in enumerate(ch):
            out[f"{side}_{finger}{k + 1}"] = j
    for k, j in enumerate(thumb):
        out[f"{side}_thumb{k + 1}"] = j


def guess_map(names, parents, heads, tails):
    """(preset or None, partial map): names first, then the structure.
    heads, tails: (B, 3) rest positions in any one frame (world)."""
    preset, by_name = best_partial_preset(names, parents)
    out = dict(by_name)
    structural = structural_map(names, parents, heads, tails)
    used = set(out.values())
    for key, bone in structural.items():
        if key not in out and bone not in used:
            out[key] = bone
            used.add(bone)
    try:
        out = check_map(out, names, parents)
    except ValueError:
        # the merge broke the hierarchy: trust the names alone if they fit
        try:
            out = check_map(dict(by_name), names, parents)
        except ValueError:
            out = check_map(structural, names) if structural else {}
    return preset, out
