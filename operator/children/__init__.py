"""Pure builders of a SubSite's child objects.

Each module turns the typed spec plus a :class:`~.context.SiteContext` into plain
manifest dicts. Nothing here talks to a server, so every child can be unit-tested and
the reconciler only decides *whether* to apply, never *what*.
"""
