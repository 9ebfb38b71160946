"""Path and site knowledge: which cache paths are shipped, how they are named, where they go.

Below both producers and consumers: the gantry's path rules (:mod:`.gantry`), the Danforth cache
layout (:mod:`.danforth`), and which site a file key belongs to (:mod:`.cache`).
"""
