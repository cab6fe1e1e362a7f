"""pathfm.training"""
