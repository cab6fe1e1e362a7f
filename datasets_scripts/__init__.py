"""pathfm.datasets_scripts"""
