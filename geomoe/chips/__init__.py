"""Cut scenes into 40 x 40 pixel chips on the fixed 1200 m grid.

:mod:`.grid` grid maths, :mod:`.plan` which chips exist and iterating them, :mod:`.read`
reading one item's chip windows, :mod:`.assets` opening and signing asset URLs (plus the
xarray loader), :mod:`.qa` QA_PIXEL masking, :mod:`.bands` band names and statistics,
:mod:`.meta` the week/hour/lat/lon encodings the model takes.
"""
