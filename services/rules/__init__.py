"""Personalization rules: segments, merchandising rules and content slots as versioned definitions,
checked against the release policy, evaluated on profiles the gateway already filtered.

It stores definitions and aggregate exposure counts only, never a subject id or a profile. Rooms:
``conditions`` (condition trees, three-valued), ``definitions`` (the kinds and their save-time
checks), ``merchandising`` (rules on a product list), ``engine`` (compiled definitions, slots and
A/B, the decision), ``catalogue`` (the generated demo catalogue), ``loader`` (YAML definitions in
``definitions/``), ``exposures`` (counts), ``service``, ``repository``, ``schemas``, ``models``, ``api``.
"""
