"""Contracts shared by operator, workers and storefront (docs/architecture.md, "Contracts").

Modules: :mod:`.siteconfig`, :mod:`.license_token`, :mod:`.events`, :mod:`.money`,
:mod:`.hq_auth`, :mod:`.hq_api`. Public names are stable; import them from their modules.
"""
