"""The embedding cube on disk: :mod:`.layout` where each chip lands and the chunk-aligned
tiles, :mod:`.store` the Zarr store (create, identity, tile writes), :mod:`.reader` the
analyst's view (``geomoe.open_cube``), :mod:`.stac_item` the STAC documents written beside it
(``<out>.stac/``), :mod:`.conventions` the Zarr convention attributes of each group.
"""
