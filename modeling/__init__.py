"""pathfm.modeling"""
def register_auto_classes():
    pass
