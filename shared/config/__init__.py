"""The settings: read from the environment in one place (``settings.Settings.from_env``), checked, named.

May import: ``catalog`` (the layout is compiled as it is read) and the ground floor.
"""
