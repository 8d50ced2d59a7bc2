"""Where the add-on's panels live: the HybrIK tab of the 3D View's sidebar."""


class SidebarPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "HybrIK"


class SubPanel(SidebarPanel):
    """A collapsed section under the main HybrIK panel."""
    bl_parent_id = "HYBRIK_PT_main"
    bl_options = {'DEFAULT_CLOSED'}
