"""pathfm.spaces"""
