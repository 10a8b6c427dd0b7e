"""``embed-region``: :mod:`.request` its one parameter definition (CLI and flow derive from
it), :mod:`.pipeline` search -> plan -> embed tiles -> cube, :mod:`.lock` the run lock.
"""
