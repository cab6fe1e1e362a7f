"""pathfm.evaluation"""
