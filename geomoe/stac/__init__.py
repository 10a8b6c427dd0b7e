"""Find the scenes: AOIs (:mod:`.aoi`) and STAC search over any catalog (:mod:`.search`).
"""
