"""The embedding cube on disk: :mod:`.layout` where each chip lands and the chunk-aligned
tiles, :mod:`.store` the Zarr store (create, identity, tile writes), :mod:`.reader` the
analyst's view (``geomoe.open_cube``), :mod:`.stac_item` the STAC item written beside it.
"""
