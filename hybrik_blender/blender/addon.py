"""Add-on registration: preferences, the capture panel, operators.

The capture runs in a separate worker process (its own Python with torch and
mediapipe); jobs.py starts it and parses its progress, a ``bpy.app.timers``
callback polls it every quarter second, so Blender stays responsive. When
the worker ends, the result (complete, or partial after a cancel) is
imported automatically with the panel's settings.
"""
import os
import sys
import tempfile

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       IntProperty, PointerProperty, StringProperty)

from ..core.body.model import BodyModelError, load_character_model
from ..core.motion.cleanup import CleanupOptions
from ..core.exitcodes import EXIT_CANCELLED, EXIT_NO_PROGRESS
from ..core.formats.result import ResultFormatError, load_result, load_tracks
from ..core.safe_paths import PathRefused, check_outputs, video_beside
from . import export, jobs, people, retarget_ops
from .animation import import_result
from .panels import SidebarPanel, SubPanel

ADDON_ID = __package__.rsplit(".", 1)[0]
POLL_S = 0.25
BACKENDS = [("mediapipe", "MediaPipe (built in)",
             "Embedded pose landmarker: no checkpoint or SMPL file needed"),
            ("hybrik", "HybrIK", "The HybrIK network: needs an official checkpoint")]


def _user_dir(*parts):
    try:
        base = bpy.utils.extension_path_user(ADDON_ID, create=True)
    except (ValueError, AttributeError):  # installed as a legacy add-on
        base = os.path.join(tempfile.gettempdir(), "hybrik_blender")
    path = os.path.join(base, *parts)
    os.makedirs(os.path.dirname(path) if parts else path, exist_ok=True)
    return path


def preferences(context=None):
    addon = (context or bpy.context).preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


def worker_python(prefs):
    """The worker's interpreter: the preference, else the set-up venv, else
    the Python running this code (right for the bpy module in a full venv)."""
    if prefs is not None and prefs.worker_python:
        return bpy.path.abspath(prefs.worker_python)
    venv = jobs.venv_python(_user_dir("worker-venv"))
    return venv if os.path.exists(venv) else sys.executable


class HYBRIK_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    worker_python: StringProperty(
        name="Worker Python", subtype='FILE_PATH',
        description="Python interpreter of an environment with torch and mediapipe; empty: "
                    "the environment made by Set up Worker Environment")
    body_model_path: StringProperty(
        name="Body model", subtype='FILE_PATH',
        description="SMPL or SMPL-X neutral model (.pkl or .npz), or a HybrIK / HybrIK-X "
                    "checkpoint (.pth) with its embedded body model; empty: armature only")
    kid_template_path: StringProperty(
        name="Children's template", subtype='FILE_PATH',
        description="smplx_kid_template.npy, for HybrIK-X's children's shape; empty: looked "
                    "for beside the SMPL-X model")
    checkpoint_path: StringProperty(
        name="HybrIK checkpoint", subtype='FILE_PATH',
        description="Official HybrIK checkpoint (.pth), for the HybrIK backend")
    device: EnumProperty(name="Device", default='auto', items=[
        ('auto', "Auto", "CUDA when available, else the CPU"),
        ('cuda', "CUDA", "NVIDIA GPU"), ('cpu', "CPU", "Processor only")])
    precision: EnumProperty(name="Precision", default='auto', items=[
        ('auto', "Auto", "bfloat16 where the processor or GPU runs it natively and, measured "
                         "on the first crops, it stays within 2 mm (median) / 5 mm (max) of "
                         "float32 in the joints and 1 degree in the rotations; else float32"),
        ('bf16', "bfloat16", "The HybrIK network in bfloat16 (AMP on CUDA): about 2-4x "
                             "faster on a CPU with AVX512-BF16 or AMX; decoding and IK stay "
                             "float32"),
        ('fp32', "float32", "Exact: the reference arithmetic")])
    default_backend: EnumProperty(name="Default backend", items=BACKENDS, default='mediapipe')
    check_report: StringProperty(default="", options={'SKIP_SAVE'})

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "worker_python")
        row = col.row(align=True)
        row.operator(HYBRIK_OT_setup_worker.bl_idname, icon='CONSOLE')
        row.operator(HYBRIK_OT_check_worker.bl_idname, icon='CHECKMARK')
        job = context.window_manager.hybrik_job
        if job.kind == 'SETUP' and (job.running or job.message):
            _draw_job(col, job)
        for line in self.check_report.splitlines():
            col.label(text=line, icon='CHECKMARK' if line.startswith("ok") else 'ERROR')
        col.separator()
        col.prop(self, "body_model_path")
        col.prop(self, "kid_template_path")
        col.prop(self, "checkpoint_path")
        col.prop(self, "device")
        col.prop(self, "precision")
        col.prop(self, "default_backend")


class HYBRIK_PG_person(bpy.types.PropertyGroup):
    """One track of the last several-people result, as the panel lists it."""
    track_id: IntProperty()
    label: StringProperty()
    frames: IntProperty()
    first: IntProperty()
    last: IntProperty()
    confidence: FloatProperty()
    icon: IntProperty()
    selected: BoolProperty(name="Import", default=True,
                           description="Import this person as a character of their own")


class HYBRIK_PG_settings(bpy.types.PropertyGroup):
    video_path: StringProperty(name="Video", subtype='FILE_PATH',
                               description="Video file or folder of images to capture")
    backend: EnumProperty(name="Backend", items=BACKENDS, default='mediapipe')
    frame_start: IntProperty(name="Start", min=0, default=0,
                             description="First video frame to capture (0-based)")
    frame_end: IntProperty(name="End", min=0, default=0,
                           description="Stop before this frame; 0 = to the end")
    camera: EnumProperty(name="Camera", default='auto', items=[
        ('auto', "Auto", "Measure the camera's rotation from the background and follow it "
                         "only if the camera turned"),
        ('static', "Static", "A fixed camera: no camera solve"),
        ('moving', "Moving", "Always follow the measured camera rotation")])
    hands: BoolProperty(name="Hands", default=False,
                        description="Also capture the fingers (mediapipe hand landmarks, "
                                    "seeded from the pose); a little slower")
    per_frame_betas: BoolProperty(
        name="Per-frame shape", default=False,
        description="Key the body shape on every frame instead of the clip's average shape")
    pose_correctives: BoolProperty(
        name="Pose correctives", default=True,
        description="Add and key the pose-corrective shape keys (207 SMPL, 486 SMPL-X)")
    body_model_type: EnumProperty(name="Character", default='AUTO', items=[
        ('AUTO', "Auto", "The body model file's type; without one, SMPL-X for takes with "
                         "hands or face, else SMPL"),
        ('SMPL', "SMPL", "24 bones, paddle hands"),
        ('SMPLX', "SMPL-X", "55 bones: body, jaw, eyes and fingers; expression keys")])
    import_hands: BoolProperty(name="Hands", default=True,
                               description="SMPL-X: key the fingers (else they stay at rest)")
    import_expressions: BoolProperty(name="Expressions", default=True,
                                     description="SMPL-X: add and key the expression "
                                                 "shape keys")
    cleanup: BoolProperty(name="Clean up motion", default=True,
                          description="Smooth, ground and foot-lock the motion on import")
    smoothing: EnumProperty(name="Smoothing", default='offline', items=[
        ('offline', "Zero-phase", "Best for finished clips"),
        ('one_euro', "One Euro", "Causal filter, as for live streams"), ('off', "Off", "")])
    rotation_strength: FloatProperty(name="Rotation", default=1.0, min=0.0, soft_max=4.0,
                                     description="Rotation smoothing strength; 0 = none")
    translation_strength: FloatProperty(name="Root", default=1.0, min=0.0, soft_max=4.0,
                                        description="Root translation smoothing; 0 = none")
    foot_locking: EnumProperty(name="Feet", default='auto', items=[
        ('auto', "Lock", "Pin planted feet with two-bone leg IK"),
        ('grounding', "Ground only", "Keep the feet on the floor, no pinning"),
        ('off', "Off", "")])
    root_mode: EnumProperty(name="Root", default='world', items=[
        ('world', "World", "Grounded Z-up world, floor at z = 0"),
        ('camera', "Camera", "As captured, in the camera's space"),
        ('in_place', "In place", "No horizontal root motion (game loops)")])
    people: IntProperty(name="People", default=1, min=0, soft_max=10,
                        description="People to capture at once: 1 follows one person "
                                    "(fastest); more finds everyone with a person detector; "
                                    "0 = all")
    persons: CollectionProperty(type=HYBRIK_PG_person)
    people_result: StringProperty(subtype='FILE_PATH', options={'SKIP_SAVE'})
    last_result: StringProperty(name="Last result", subtype='FILE_PATH', options={'SKIP_SAVE'})
    last_partial: BoolProperty(default=False, options={'SKIP_SAVE'})

    def cleanup_options(self):
        if not self.cleanup:
            return None
        return CleanupOptions(smoothing=self.smoothing, rotation_strength=self.rotation_strength,
                              translation_strength=self.translation_strength,
                              foot_locking=self.foot_locking, root_mode=self.root_mode)


class HYBRIK_PG_job(bpy.types.PropertyGroup):
    """What the panel shows of the running job (window-manager data: never saved)."""
    kind: StringProperty(default="")
    running: BoolProperty(default=False)
    factor: FloatProperty(default=0.0)
    text: StringProperty(default="")
    message: StringProperty(default="")
    is_error: BoolProperty(default=False)


class _State:
    job = None
    kind = ""
    out = ""
    video = ""
    people_video = None


def _set_job_props(wm, state=None, message=None, error=False):
    p = wm.hybrik_job
    p.kind = _State.kind
    if state is not None:
        p.running = state.running
        p.factor = state.factor
        p.text = state.summary()
    if message:
        _report(f"HybrIK: {message}", error)
    if message is not None:
        p.message, p.is_error = message, error


class HYBRIK_OT_report(bpy.types.Operator):
    """Show a message in Blender's status bar and Info log (timers cannot report)"""
    bl_idname = "hybrik.report"
    bl_label = "HybrIK Message"
    bl_options = {'INTERNAL'}

    message: StringProperty()
    error: BoolProperty(default=False)

    def execute(self, context):
        self.report({'ERROR'} if self.error else {'INFO'}, self.message)
        return {'FINISHED'}


def _report(message, error=False):
    try:
        bpy.ops.hybrik.report(message=message, error=error)
    except RuntimeError:  # an ERROR report raises when there is no window (background)
        pass


def _redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ('VIEW_3D', 'PREFERENCES'):
                area.tag_redraw()


def list_people(context, result_path):
    """Fill the panel's list with the tracks of a several-people result;
    returns the takes (a one-person result gives one take and no list)."""
    settings = context.scene.hybrik
    takes = load_tracks(result_path)
    settings.persons.clear()
    settings.people_result = ""
    if len(takes) < 2 and "appearance" not in takes[0].extras:
        return takes
    for info, take in zip(people.person_summaries(takes), takes):
        item = settings.persons.add()
        item.track_id, item.label = info["id"], info["name"]
        item.frames, item.first, item.last = info["frames"], info["first"], info["last"]
        item.confidence = info["confidence"]
        if take.thumbnail is not None:
            item.icon = people.thumbnail_icon(f"{result_path}#{info['id']}", take.thumbnail)
    settings.people_result = result_path
    return takes


def _character_model(context, model_path=None):
    """The body model for an import: `model_path`, else the preferences' one
    (with the preferences' children's template); None for neither."""
    prefs = preferences(context)
    if not model_path:
        model_path = prefs.body_model_path if prefs else ""
    kid = bpy.path.abspath(prefs.kid_template_path) if prefs and prefs.kid_template_path \
        else None
    return load_character_model(bpy.path.abspath(model_path), kid) if model_path else None


def import_people_with_settings(context, result_path, ids, video_path=None, model_path=None):
    """Import the chosen people of a result; returns (takes imported, first result)."""
    settings = context.scene.hybrik
    model = _character_model(context, model_path)
    results = load_tracks(result_path)
    if video_path is None:  # only beside the result file, never a path from the file
        video_path = video_beside(result_path, results[0].source)
    if context.object and context.object.mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')
    takes = people.import_people(results, model, ids, video_path=video_path,
                                 per_frame_betas=settings.per_frame_betas,
                                 pose_correctives=settings.pose_correctives,
                                 cleanup=settings.cleanup_options())
    return takes, results[0]


def import_with_settings(context, result_path, video_path=None, model_path=None):
    """Load a result file and import it with the scene's settings and the
    preferences' body model (or `model_path`). Returns (take, result);
    raises BodyModelError / ResultFormatError."""
    settings = context.scene.hybrik
    model = _character_model(context, model_path)
    result = load_result(result_path)
    if video_path is None:  # only beside the result file, never a path from the file
        video_path = video_beside(result_path, result.source)
    if context.object and context.object.mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')
    take = import_result(result, model, per_frame_betas=settings.per_frame_betas,
                         pose_correctives=settings.pose_correctives,
                         cleanup=settings.cleanup_options(), video_path=video_path,
                         body_model=settings.body_model_type.lower(),
                         hands=settings.import_hands, expressions=settings.import_expressions)
    return take, result


def finish_capture(context, state):
    """Called once the worker has ended: import what it wrote."""
    wm = context.window_manager
    out = _State.out
    # import only what this run wrote (its "done" event): a cancel before
    # anything was written must not import an older file of that name
    wrote = bool(state.final) and os.path.exists(out)
    if state.returncode == EXIT_NO_PROGRESS:
        _set_job_props(wm, state, f"Resume made no progress: {state.error}", error=True)
        return False
    if wrote and state.returncode in (0, EXIT_CANCELLED):
        try:
            listed = list_people(context, out)
            if context.scene.hybrik.persons:
                context.scene.hybrik.last_result = out
                context.scene.hybrik.last_partial = not listed[0].complete
                _State.people_video = _State.video
                _set_job_props(wm, state, f"Found {len(listed)} people: tick whom to import, "
                                          "then Import People")
                return True
            take, result = import_with_settings(context, out, _State.video)
        except (BodyModelError, ResultFormatError, ValueError) as exc:
            _set_job_props(wm, state, f"Import failed: {exc}", error=True)
            return False
        context.scene.hybrik.last_result = out
        context.scene.hybrik.last_partial = not result.complete
        partial = "" if result.complete else " (partial: cancelled)"
        camera = " with a moving camera" if result.camera and result.camera.mode == "moving" \
            else ""
        notes = "".join(f"; {w}" for w in result.warnings)
        _set_job_props(wm, state, f"Imported {take.rig.name}, frames {take.frame_start}-"
                                  f"{take.frame_end}{camera}{partial}{notes}")
        return True
    _set_job_props(wm, state, f"Capture failed: {state.error}", error=True)
    print(f"hybrik-blender: capture failed: {state.error}", file=sys.stderr)
    return False


def finish_setup(context, state):
    wm = context.window_manager
    prefs = preferences(context)
    if state.returncode == 0 and state.final and state.final.get("python"):
        if prefs is not None:
            prefs.worker_python = state.final["python"]
        _set_job_props(wm, state, "Worker environment ready: click Check")
        return True
    _set_job_props(wm, state, f"Set-up failed: {state.error}", error=True)
    return False


def poll_job():
    """Timer callback: refresh the panel; finish the job when it has ended."""
    job = _State.job
    if job is None:
        return None
    state = job.poll()
    context = bpy.context
    _set_job_props(context.window_manager, state)
    _redraw()
    if state.running:
        return POLL_S
    _State.job = None
    (finish_capture if _State.kind == 'CAPTURE' else finish_setup)(context, state)
    _redraw()
    return None


def _start(kind, job, out="", video=""):
    _State.job, _State.kind, _State.out, _State.video = job, kind, out, video
    _set_job_props(bpy.context.window_manager, job.state, message="")
    if not bpy.app.timers.is_registered(poll_job):
        bpy.app.timers.register(poll_job, first_interval=POLL_S)


def result_path_for(video_path):
    """Where a capture's result goes: beside the saved .blend, else in the
    add-on's user folder."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(video_path)))[0] or "take"
    if bpy.data.filepath:
        folder = os.path.join(os.path.dirname(bpy.data.filepath), "hybrik")
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{stem}.npz")
    return _user_dir("results", f"{stem}.npz")


class HYBRIK_OT_capture(bpy.types.Operator):
    """Capture the video's motion in a background worker, then import it"""
    bl_idname = "hybrik.capture"
    bl_label = "Capture"

    resume: BoolProperty(name="Resume", default=False,
                         description="Continue the partial result of a cancelled capture")

    @classmethod
    def poll(cls, context):
        return _State.job is None

    def execute(self, context):
        prefs = preferences(context)
        settings = context.scene.hybrik
        video = bpy.path.abspath(settings.video_path)
        if not settings.video_path or not os.path.exists(video):
            self.report({'ERROR'}, "Choose a video file (or folder of images) first")
            return {'CANCELLED'}
        python = worker_python(prefs)
        if not os.path.exists(python):
            self.report({'ERROR'}, f"Worker Python not found: {python}. Set it, or click "
                                   "Set up Worker Environment in the preferences")
            return {'CANCELLED'}
        checkpoint = bpy.path.abspath(prefs.checkpoint_path) if prefs else ""
        if settings.backend == 'hybrik' and not checkpoint:
            self.report({'ERROR'}, "The HybrIK backend needs a checkpoint (add-on preferences)")
            return {'CANCELLED'}
        model = bpy.path.abspath(prefs.body_model_path) if prefs and prefs.body_model_path else ""
        try:
            out = result_path_for(video)
            check_outputs([("result file", out), ("cancel file", out + ".cancel")],
                          [("video", video), ("body model", model), ("checkpoint", checkpoint)])
        except (PathRefused, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        job = jobs.start_capture(
            python, video, out, backend=settings.backend, checkpoint=checkpoint,
            smpl_model=model if model.lower().endswith((".pkl", ".npz")) else "",
            device=prefs.device if prefs else "auto",
            precision=prefs.precision if prefs else "auto", start=settings.frame_start,
            end=settings.frame_end or None, resume=self.resume, people=settings.people,
            camera=settings.camera,
            hands=settings.hands)
        _start('CAPTURE', job, out, video)
        self.report({'INFO'}, f"Capture started: {os.path.basename(video)}")
        return {'FINISHED'}


class HYBRIK_OT_cancel(bpy.types.Operator):
    """Stop the running job; a capture keeps the frames done so far"""
    bl_idname = "hybrik.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return _State.job is not None

    def execute(self, context):
        _State.job.cancel()
        self.report({'INFO'}, "Cancelling: the frames done so far will be imported")
        return {'FINISHED'}


class HYBRIK_OT_setup_worker(bpy.types.Operator):
    """Create a Python environment for the worker in the add-on's user folder and install
    torch, mediapipe and OpenCV into it (downloads about 1 GB)"""
    bl_idname = "hybrik.setup_worker"
    bl_label = "Set up Worker Environment"

    @classmethod
    def poll(cls, context):
        return _State.job is None

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        if not bpy.app.online_access:
            self.report({'ERROR'}, "Online access is off: allow it in Preferences > System "
                                   "> Network to download the worker packages")
            return {'CANCELLED'}
        req = os.path.join(os.path.dirname(os.path.dirname(__file__)), "worker",
                           "requirements.txt")
        job = jobs.Job(jobs.setup_args(jobs.blender_python(), _user_dir("worker-venv"), req))
        _start('SETUP', job)
        return {'FINISHED'}


class HYBRIK_OT_check_worker(bpy.types.Operator):
    """Check the worker environment: torch, CUDA, mediapipe, checkpoint, body model"""
    bl_idname = "hybrik.check_worker"
    bl_label = "Check"

    def execute(self, context):
        prefs = preferences(context)
        ok, text = jobs.run_check(
            worker_python(prefs),
            bpy.path.abspath(prefs.checkpoint_path) if prefs and prefs.checkpoint_path else "",
            bpy.path.abspath(prefs.body_model_path) if prefs and prefs.body_model_path else "")
        if prefs is not None:
            prefs.check_report = text
        self.report({'INFO'} if ok else {'WARNING'},
                    "Worker environment complete" if ok else
                    "Missing: " + "; ".join(line[8:] for line in text.splitlines()
                                            if line.startswith("MISSING")) or text)
        return {'FINISHED'}


class HYBRIK_OT_import_result(bpy.types.Operator):
    """Import a hybrik-blender result file (.npz) as an animated SMPL character"""
    bl_idname = "hybrik.import_result"
    bl_label = "Import Result"
    bl_options = {'REGISTER', 'UNDO'}

    filepath: StringProperty(subtype='FILE_PATH')
    filter_glob: StringProperty(default="*.npz", options={'HIDDEN'})
    body_model_path: StringProperty(
        name="Body model", subtype='FILE_PATH',
        description="Overrides the body model set in the preferences")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {'RUNNING_MODAL'}

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        try:
            listed = list_people(context, path)
            if context.scene.hybrik.persons:
                _State.people_video = None
                self.report({'INFO'}, f"{len(listed)} people in {os.path.basename(path)}: "
                                      "tick whom to import, then Import People")
                return {'FINISHED'}
            take, result = import_with_settings(context, path, model_path=self.body_model_path)
        except (BodyModelError, ResultFormatError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        note = "" if result.complete else " (partial result)"
        self.report({'INFO'}, f"Imported {os.path.basename(self.filepath)}{note}: "
                              f"frames {take.frame_start}-{take.frame_end} on {take.rig.name}")
        for text in take.notes:
            self.report({'WARNING'}, text)
        return {'FINISHED'}


class HYBRIK_OT_import_people(bpy.types.Operator):
    """Import each ticked person of the listed result as a character of their own,
    all on one camera"""
    bl_idname = "hybrik.import_people"
    bl_label = "Import People"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        s = context.scene.hybrik
        return bool(s.people_result) and any(p.selected for p in s.persons)

    def execute(self, context):
        s = context.scene.hybrik
        ids = [p.track_id for p in s.persons if p.selected]
        try:
            takes, result = import_people_with_settings(context, s.people_result, ids,
                                                        video_path=_State.people_video)
        except (BodyModelError, ResultFormatError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        note = "" if result.complete else " (partial result)"
        self.report({'INFO'}, f"Imported {', '.join(t.rig.name for t in takes)}{note}")
        return {'FINISHED'}


def _draw_people(layout, settings):
    box = layout.box()
    box.label(text=f"People in {os.path.basename(settings.people_result)}", icon='COMMUNITY')
    for p in settings.persons:
        row = box.row(align=True)
        row.prop(p, "selected", text="")
        if p.icon:
            row.template_icon(icon_value=p.icon, scale=2.0)
        col = row.column(align=True)
        col.label(text=f"{p.label} (id {p.track_id})")
        col.label(text=f"frames {p.first}-{p.last}: {p.frames} seen, "
                       f"confidence {p.confidence:.2f}")
    box.operator(HYBRIK_OT_import_people.bl_idname, icon='IMPORT')


def _draw_job(layout, job):
    if job.running:
        row = layout.row(align=True)
        row.progress(factor=job.factor, type='BAR', text=job.text)
        row.operator(HYBRIK_OT_cancel.bl_idname, text="", icon='CANCEL')
    if job.message:
        box = layout.box()
        for i, line in enumerate(_wrap(job.message, 48)):
            box.label(text=line, icon=('ERROR' if job.is_error else 'INFO') if i == 0 else 'NONE')


def _wrap(text, width):
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return lines + ([line] if line else [])


class HYBRIK_PT_main(SidebarPanel, bpy.types.Panel):
    bl_label = "HybrIK Mocap"
    bl_idname = "HYBRIK_PT_main"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.hybrik
        col = layout.column()
        col.prop(settings, "video_path")
        col.prop(settings, "backend")
        col.prop(settings, "people")
        row = col.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
        col.prop(settings, "camera")
        col.prop(settings, "hands")
        job = context.window_manager.hybrik_job
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator(HYBRIK_OT_capture.bl_idname, icon='REC')
        if _State.job is None and settings.last_partial and os.path.exists(settings.last_result):
            row.operator(HYBRIK_OT_capture.bl_idname, text="", icon='FILE_REFRESH').resume = True
        if job.kind == 'CAPTURE':
            _draw_job(layout, job)
        if settings.people_result and settings.persons:
            _draw_people(layout, settings)
        layout.operator(HYBRIK_OT_import_result.bl_idname, icon='IMPORT')


class HYBRIK_PT_import_options(SubPanel, bpy.types.Panel):
    bl_label = "Import Options"
    bl_idname = "HYBRIK_PT_import_options"

    def draw(self, context):
        s = context.scene.hybrik
        col = self.layout.column()
        col.prop(s, "body_model_type")
        row = col.row(align=True)
        row.active = s.body_model_type != 'SMPL'
        row.prop(s, "import_hands", toggle=True)
        row.prop(s, "import_expressions", toggle=True)
        col.prop(s, "per_frame_betas")
        col.prop(s, "pose_correctives")
        col.prop(s, "cleanup")
        sub = col.column()
        sub.active = s.cleanup
        sub.prop(s, "smoothing")
        row = sub.row(align=True)
        row.prop(s, "rotation_strength")
        row.prop(s, "translation_strength")
        sub.prop(s, "foot_locking")
        sub.prop(s, "root_mode")


CLASSES = (HYBRIK_AP_preferences, HYBRIK_PG_person, HYBRIK_PG_settings, HYBRIK_PG_job,
           HYBRIK_OT_report, HYBRIK_OT_capture, HYBRIK_OT_import_people,
           HYBRIK_OT_cancel, HYBRIK_OT_setup_worker, HYBRIK_OT_check_worker,
           HYBRIK_OT_import_result, HYBRIK_PT_main, HYBRIK_PT_import_options,
           *retarget_ops.CLASSES, *export.CLASSES)


def register():
    for cls in CLASSES:
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
        bpy.utils.register_class(cls)
    bpy.types.Scene.hybrik = PointerProperty(type=HYBRIK_PG_settings)
    bpy.types.WindowManager.hybrik_job = PointerProperty(type=HYBRIK_PG_job)
    retarget_ops.register_properties()


def unregister():
    # a worker never outlives the add-on
    if _State.job is not None:
        _State.job.stop()
        _State.job = None
    jobs.stop_all()
    if bpy.app.timers.is_registered(poll_job):
        bpy.app.timers.unregister(poll_job)
    retarget_ops.unregister_properties()
    people.clear_icons()
    for owner, name in ((bpy.types.Scene, "hybrik"), (bpy.types.WindowManager, "hybrik_job")):
        if hasattr(owner, name):
            delattr(owner, name)
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
